"""A model that spans Sparks: the inventory's refusals, before any host is touched."""

import pytest

from sparkstack.settings import SettingsError, validate_inventory

BIG = {"name": "big", "model": "org/big", "port": 8010, "gpu_memory_utilization": 0.8,
       "cluster": {"hosts": ["spark1", "spark2"], "tensor_parallel_size": 2}}


def inventory(big=BIG, spark1=None, spark2=None):
    link = {"roles": ["vllm"], "models": []}
    return {"spark1": {"models": [big], "profiles": {"big": {"local": ["big"]}},
                       "litellm_model_aliases": {}, "link_interface": "enp1s0f0np0",
                       "link_address": "192.168.100.1", **(spark1 or {})},
            "spark2": {**link, "link_interface": "enp1s0f0np0",
                       "link_address": "192.168.100.2", **(spark2 or {})}}


def refused(datas) -> str:
    with pytest.raises(SettingsError) as err:
        validate_inventory(datas)
    return str(err.value)


def test_a_two_spark_cluster_with_its_link_is_accepted():
    hosts = validate_inventory(inventory())
    assert hosts[0].models[0]["cluster"]["hosts"] == ["spark1", "spark2"]


def test_a_host_not_in_the_inventory_is_refused():
    big = {**BIG, "cluster": {"hosts": ["spark1", "spark3"], "tensor_parallel_size": 2}}
    assert "spark3 not in the inventory" in refused(inventory(big))


def test_parallel_sizes_must_use_one_gpu_per_spark():
    big = {**BIG, "cluster": {"hosts": ["spark1", "spark2"], "tensor_parallel_size": 2,
                              "pipeline_parallel_size": 2}}
    assert "= 4, but it spans 2 Sparks" in refused(inventory(big))


def test_a_link_given_on_one_host_only_is_refused():
    message = refused(inventory(spark2={"link_interface": "", "link_address": ""}))
    assert "spark2 has no link_interface or link_address" in message


def test_two_clusters_claiming_one_host_are_refused():
    other = {**BIG, "name": "other", "port": 8011,
             "cluster": {"hosts": ["spark2", "spark1"], "tensor_parallel_size": 2}}
    datas = inventory(spark2={"models": [other]})
    assert "already given to the cluster of big on spark1" in refused(datas)


def test_the_shape_is_checked_with_the_other_model_settings():
    big = {**BIG, "cluster": {"hosts": ["spark1"], "tensor_parallel_size": 1}}
    assert "two or more different inventory host names" in refused(inventory(big))
    assert "link_interface = 'en p1'" in refused(inventory(spark1={"link_interface": "en p1"}))


def test_a_cluster_model_in_a_swap_group_is_refused():
    assert "cannot be in a swap group" in refused(inventory({**BIG, "swap_group": "g"}))


def exec_start(unit: str) -> str:
    """The ExecStart line's words, as systemd splits them, joined by spaces."""
    import shlex
    line = next(line for line in unit.splitlines() if line.startswith("ExecStart="))
    return " ".join(shlex.split(line.removeprefix("ExecStart=")))


def rendered(hosts, model, context) -> str:
    from sparkstack.render import template
    from sparkstack.services.vllm import UNIT_TEMPLATE
    s = hosts[context.pop("on")]
    return template(UNIT_TEMPLATE, s=s, layout=s.layout, venv="/opt/v", state_dir="/v",
                    secrets_env="/e", wait_ready="/w", **context)


def test_the_leader_serves_the_api_and_names_the_nodes_it_waits_for():
    from sparkstack.fleet import Fleet
    from sparkstack.services.vllm import unit_context
    hosts = validate_inventory(inventory())
    fleet = Fleet(hosts)
    context = unit_context(hosts[0], hosts[0].models[0], "127.0.0.1", fleet)
    unit = rendered(hosts, hosts[0].models[0], {**context, "on": 0})
    start = exec_start(unit)
    assert "sparkstack-cluster-node --node spark2=192.168.100.2 -- /opt/v/bin/vllm " \
           "serve org/big" in start
    assert start.endswith("--tensor-parallel-size 2 --pipeline-parallel-size 1 --nnodes 2 "
                          "--node-rank 0 --master-addr 192.168.100.1 --master-port 29500")
    assert '"--member" "spark2=192.168.100.2" "--master-port" "29500"' in unit
    for line in ("Environment=VLLM_HOST_IP=192.168.100.1",
                 "Environment=\"NCCL_SOCKET_IFNAME=enp1s0f0np0\"",
                 "Environment=\"GLOO_SOCKET_IFNAME=enp1s0f0np0\"",
                 "Environment=\"TP_SOCKET_IFNAME=enp1s0f0np0\"",
                 "Environment=\"UCX_NET_DEVICES=enp1s0f0np0\""):
        assert line in unit.splitlines()
    assert "--undrain big --apply" in unit   # LiteLLM routes the leader


def test_a_node_runs_headless_under_its_leaders_settings_and_its_own_link():
    from sparkstack.fleet import Fleet
    from sparkstack.services.vllm import cluster, node_context
    hosts = validate_inventory(inventory(spark2={"link_interface": "enp1s0f1np1"}))
    fleet = Fleet(hosts)
    assert cluster.parts_on(hosts[0], fleet) == []
    [part] = cluster.parts_on(hosts[1], fleet)
    assert (part.rank, part.leader.name, part.model["name"]) == (1, "spark1", "big")
    unit = rendered(hosts, part.model, {**node_context(hosts[1], part), "on": 1})
    start = exec_start(unit)
    assert "sparkstack-cluster-node --leader 192.168.100.1:29500 -- /opt/v/bin/vllm serve " \
           "org/big" in start
    assert start.endswith("--nnodes 2 --node-rank 1 --master-addr 192.168.100.1 "
                          "--master-port 29500 --headless")
    assert "Environment=VLLM_HOST_IP=192.168.100.2" in unit.splitlines()
    assert "Environment=\"NCCL_SOCKET_IFNAME=enp1s0f1np1\"" in unit.splitlines()
    # no API, no route, no readiness wait of its own: its leader answers for the model
    assert "ExecStartPost" not in unit and "sparkstack-routes" not in unit
    assert "Description=vLLM: node 1 of big (org/big), led by spark1" in unit
