"""Planning a rolling update: batches, profiles that would go dark, what changes."""

import pytest

from sparkstack.fleet import Fleet
from sparkstack.host_facts import Snapshot
from sparkstack.rollout.plan import batches, changes, would_go_dark
from sparkstack.services import registry
from sparkstack.settings import validate_inventory


@pytest.mark.parametrize("size,expected", [
    ("1", [["a"], ["b"], ["c"]]), ("2", [["a", "b"], ["c"]]), ("5", [["a", "b", "c"]]),
    ("50%", [["a"], ["b"], ["c"]]), ("67%", [["a", "b"], ["c"]]),
    ("100%", [["a", "b", "c"]]), ("1%", [["a"], ["b"], ["c"]])])
def test_batches_of_a_number_or_a_share_of_hosts(size, expected):
    assert batches(["a", "b", "c"], size) == expected


def two_sparks(cloud: str) -> Fleet:
    solo = [{"name": "solo", "model": "a/b", "port": 8000}]
    return Fleet(validate_inventory({
        "a": {"address": "10.0.0.1", "models": [], "roles": ["postgres", "litellm"],
              "cloud_api_key": cloud, "litellm_model_aliases": {},
              "profiles": {"solo": {"local": ["solo"], "cloud": "openrouter/x"}}},
        "b": {"address": "10.0.0.2", "roles": ["vllm"], "models": solo}}))


def test_a_profile_served_by_one_spark_only_and_no_cloud_would_go_dark(monkeypatch):
    monkeypatch.delenv("OPENROUTER_API_KEY", raising=False)
    assert would_go_dark("b", two_sparks(cloud="")) == ["solo"]
    assert would_go_dark("a", two_sparks(cloud="")) == []       # a serves no model
    assert would_go_dark("b", two_sparks(cloud="sk-or-x")) == []  # the cloud takes it


def test_an_update_lists_each_venv_that_differs_from_the_inventory():
    s = validate_inventory({"s": {"litellm_version": "1.103.1",
                                  "litellm_request_log": False,
                                  "request_log": False}})[0]
    layout = s.layout
    files, contents = {}, {}
    for service, _, requirements in registry.venvs(s):
        files[f"{layout.service_root(service)}/current"] = {
            "type": "l", "target": f"venvs/{registry.venv_id(s, requirements)}"}
    # LiteLLM still runs the release before
    files[f"{layout.service_root('litellm')}/current"]["target"] = "venvs/0123456789abcdef"
    contents[f"{layout.venv('litellm')}/sparkstack-requirements.txt"] = \
        "litellm[proxy]==1.102.4\nhttptools==0.9.0\n"
    found = changes(s, Snapshot({"files": files, "contents": contents}, []))
    assert found == ["LiteLLM: litellm[proxy]==1.102.4 httptools==0.9.0 -> "
                     "litellm[proxy]==1.103.1 httptools==0.9.0"]


def test_a_rollback_undoes_the_last_update_that_changed_the_fleet_where_it_did():
    """update-2 took effect on a only (it failed and rolled itself back on b): a
    rollback returns a to before update-2, and leaves b, which runs that already."""
    from sparkstack.rollout.plan import make_plan
    fleet = two_sparks(cloud="sk-or-x")
    history = fleet["a"].layout.update_history
    snapshots = {"a": Snapshot({"files": {}, "contents": {
                     history: "update-20261201-100000\nupdate-20261201-110000\n"}}, []),
                 "b": Snapshot({"files": {}, "contents": {
                     history: "update-20261201-100000\n"}}, [])}
    plan = make_plan(fleet, snapshots, "1", rollback=True)
    assert plan.changes == {"a": ["back to the versions before update-20261201-110000"],
                            "b": []}
    assert plan.order == [["a"]]
    assert ("b: not changed by update-20261201-110000, nothing to roll back, skipped"
            in plan.describe())
    # the next rollback undoes update-1 on both
    snapshots["a"].data["contents"][history] = "update-20261201-100000\n"
    assert make_plan(fleet, snapshots, "1", rollback=True).order == [["a"], ["b"]]


def test_a_clusters_hosts_go_in_one_batch():
    """The model across spark1 and spark3 restarts as a whole: with batches of one
    host, spark3 joins spark1's batch; spark2 keeps its own."""
    from sparkstack.rollout.plan import keep_clusters_together
    from tests.test_clusters import BIG, inventory
    datas = inventory({**BIG, "cluster": {"hosts": ["spark1", "spark3"],
                                          "tensor_parallel_size": 2}})
    datas["spark3"] = datas.pop("spark2")
    datas["spark2"] = {"roles": ["vllm"], "models": []}
    fleet = Fleet(validate_inventory(datas))
    assert keep_clusters_together(batches(["spark1", "spark2", "spark3"], "1"), fleet) == [
        ["spark1", "spark3"], ["spark2"]]
    assert keep_clusters_together([["spark2"], ["spark3"]], fleet) == [["spark2"], ["spark3"]]
