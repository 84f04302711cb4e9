"""Model swaps on simulated Sparks, each under client traffic through LiteLLM (openai
and anthropic SDKs, no retries, at least 5 requests/s on the profile): zero failed
requests, and who answered before, during and after.

spark3 runs PostgreSQL, LiteLLM and vLLM; its profile `fast` is served by the swap
group `fast-group` (members `day` and `night`). The steps run in order: an on-demand
swap and back (make-before-break), a swap that needs the old model's memory
(break-before-make), rollbacks after a model that never becomes ready and one that
crashes while loading, a declarative swap to a model downloaded from the Hub, and a
fleet swap over two Sparks, one at a time.
"""

from __future__ import annotations

import json
import subprocess
import time

import pytest
from sparkstack_host.contract import Layout

from sparkstack.simulated import fleet
from sparkstack.simulated.fleet import ssh
from sparkstack.simulated.hub_standin import HubStandin
from tests import fit_models as fm
from tests.e2e.conftest import SPARKSTACK, SimFleet
from tests.e2e.helpers import REPO, run_deploy, unit_starts
from tests.e2e.traffic import Traffic

pytestmark = pytest.mark.e2e
LAYOUT = Layout()
DAY, NIGHT = "sparkstack-vllm-day.service", "sparkstack-vllm-night.service"


def member(name: str, port: int, gmu: float = 0.2, **extra) -> dict:
    return {"name": name, "model": "Qwen/Qwen3-4B-Instruct-2507", "port": port,
            "gpu_memory_utilization": gmu, "swap_group": "fast-group", **extra}


class Fleet(SimFleet):
    def __init__(self, tmp, cloud, hub: HubStandin):
        super().__init__(tmp, cloud)
        self.hub = hub
        self.boot("spark3", 3)
        self.models = {"spark3": [member("day", 8000), member("night", 8001)]}

    def write(self, **group) -> None:
        group = {"profiles": {"fast": {"local": ["fast-group"],
                                       "cloud": "openrouter/fast-in-the-cloud"}},
                 "litellm_model_aliases": {}, "hf_endpoint": self.hub.endpoint,
                 "vllm_environment": {"VLLM_STANDIN_LOAD_SECONDS": "3"}, **group}
        hosts = {"spark3": {"roles": ["postgres", "vllm", "litellm"],
                            "litellm_bind_address": self.hosts[0].address}}
        for h in self.hosts[1:]:
            hosts[h.name] = {"roles": ["vllm"]}
        for name, models in self.models.items():
            hosts[name]["models"] = models
        self.write_hosts(group, hosts)

    def fast_traffic(self) -> Traffic:
        return self.traffic(self.hosts[0], ["fast"], rate=6)

    def swap(self, model: str) -> subprocess.CompletedProcess:
        """`sparkstack swap MODEL`; its whole output in .stdout."""
        return self.sparkstack("swap", model)

    def health(self) -> dict:
        out = subprocess.run([SPARKSTACK, "health", "-i", str(self.inventory), "--json",
                              "--limit", "spark3"], cwd=REPO, capture_output=True,
                             text=True, timeout=120)
        return {r["check"]: r for r in json.loads(out.stdout)}

    def state(self, host=None) -> str:
        """Everything a rolled-back swap must leave as it was."""
        return ssh(host or self.hosts[0], "cd / && sha256sum /etc/systemd/system/"
                   "sparkstack-vllm-* /etc/sparkstack/manifest.json "
                   "/etc/sparkstack/litellm/routes.json /etc/sparkstack/litellm/config.yaml "
                   f"{LAYOUT.swap_choices} 2>&1; systemctl list-units --all --plain "
                   "--no-legend 'sparkstack-vllm-*'; systemctl list-unit-files --no-legend "
                   "'sparkstack-vllm-*'", check=False).stdout


def steady(traffic: Traffic, answers: int = 12, timeout: float = 60) -> None:
    """Let `answers` more requests be answered, all by the same backend, so the step
    before and the one after are told apart in the sequence."""
    deadline = time.monotonic() + timeout
    start = len(traffic.answers)
    while time.monotonic() < deadline:
        recent = traffic.answers[start:]
        if len(recent) >= answers and len({a.who for a in recent[-answers // 2:]}) == 1:
            return
        time.sleep(0.2)
    raise AssertionError(f"no steady answers after {timeout:.0f} s: "
                         f"{[a.who or a.error[:60] for a in traffic.answers[start:]][-8:]}")


@pytest.fixture(scope="module")
def sparks(sim, tmp_path_factory):
    with HubStandin(tmp_path_factory.mktemp("hub"), host=fleet.BRIDGE_ADDR) as hub:
        f = sim(Fleet, hub)
        f.write()
        first = f.deploy()
        assert first.returncode == 0, first.output[-3000:]
        yield f


def assert_served_throughout(traffic: Traffic, expected: list[str]) -> None:
    assert traffic.failures() == [], traffic.failures()[:3]
    assert traffic.rate("fast") >= 5, traffic.rate("fast")
    assert traffic.sequence("fast") == expected, traffic.sequence("fast")


def test_the_first_member_runs_and_the_other_stands_by(sparks):
    host = sparks.hosts[0]
    assert ssh(host, f"systemctl is-active {DAY} {NIGHT}", check=False).stdout.split() == [
        "active", "inactive"]
    assert ssh(host, f"systemctl is-enabled {DAY} {NIGHT}", check=False).stdout.split() == [
        "enabled", "disabled"]
    rows = sparks.health()
    assert rows["swap group fast-group"]["ok"]
    assert rows["swap group fast-group"]["detail"] == "running day; standing by: night"


def assert_local_throughout(traffic: Traffic, old: str, new: str, swapped: float) -> None:
    """Make-before-break: old, then (while both are routed) either, then new; never the
    cloud, and only the new model once the swap returned at `swapped`."""
    assert traffic.failures() == [], traffic.failures()[:3]
    assert traffic.rate("fast") >= 5, traffic.rate("fast")
    seen = traffic.sequence("fast")
    assert seen[0] == old and seen[-1] == new and set(seen) == {old, new}, seen
    assert {a.who for a in traffic.answers if a.at > swapped} == {new}


def test_an_on_demand_swap_makes_before_it_breaks_and_a_deploy_keeps_it(sparks):
    with sparks.fast_traffic() as traffic:
        steady(traffic)
        swap = sparks.swap("night")
        swapped = time.monotonic()
        steady(traffic)
    assert swap.returncode == 0, swap.stdout[-3000:]
    assert "swap (make-before-break): stop sparkstack-vllm-day.service; start " \
           "sparkstack-vllm-night.service" in swap.stdout
    # the profile never left the local models: day, then night, never the cloud
    assert_local_throughout(traffic, "day@spark3", "night@spark3", swapped)
    assert sparks.health()["swap group fast-group"]["detail"] == \
        "running night; standing by: day"
    # the choice is kept on the host: a deploy changes nothing
    again = run_deploy(sparks.inventory)
    assert again.returncode == 0, again.output[-3000:]
    assert again.grand_total()["changed"] == "-", again.output[-3000:]
    with sparks.fast_traffic() as traffic:
        steady(traffic)
        back = sparks.swap("day")
        swapped = time.monotonic()
        steady(traffic)
    assert back.returncode == 0, back.stdout[-3000:]
    assert_local_throughout(traffic, "night@spark3", "day@spark3", swapped)


def test_a_model_that_needs_the_old_ones_memory_breaks_before_it_makes(sparks):
    sparks.models["spark3"] = [member("day", 8000, 0.5), member("night", 8001, 0.5)]
    sparks.write()
    started = unit_starts(sparks.hosts[0], [DAY])
    # day's budget changes: a swap in place, day to day
    with sparks.fast_traffic() as traffic:
        steady(traffic)
        result = run_deploy(sparks.inventory)
        steady(traffic)
    assert result.returncode == 0, result.output[-3000:]
    assert "swap (break-before-make): stop sparkstack-vllm-day.service; start " \
           "sparkstack-vllm-day.service" in result.output
    assert unit_starts(sparks.hosts[0], [DAY]) != started
    # meanwhile `fast` went to its cloud fallback, then back
    assert_served_throughout(traffic, ["day@spark3", "cloud", "day@spark3"])
    with sparks.fast_traffic() as traffic:
        steady(traffic)
        swap = sparks.swap("night")
        steady(traffic)
    assert swap.returncode == 0, swap.stdout[-3000:]
    assert "swap (break-before-make)" in swap.stdout
    assert_served_throughout(traffic, ["day@spark3", "cloud", "night@spark3"])
    off = traffic.off_local("fast")
    assert 0 < off <= 3 + 5, off  # the new model's load time + 5 s


def test_a_model_that_never_becomes_ready_is_rolled_back(sparks):
    sparks.models["spark3"] = [member("day", 8000, 0.5), member("night", 8001, 0.5),
                               member("stuck", 8002, 0.2,
                                      environment={"VLLM_STANDIN_NEVER_READY": "1"})]
    sparks.write(vllm_start_timeout=8)
    result = run_deploy(sparks.inventory)  # stuck stands by: nothing runs differently
    assert result.returncode == 0, result.output[-3000:]
    before = sparks.state()
    with sparks.fast_traffic() as traffic:
        steady(traffic)
        swap = sparks.swap("stuck")
        steady(traffic)
    assert swap.returncode != 0
    assert "swap rolled back, sparkstack-vllm-stuck.service did not become ready" in \
        swap.stdout
    assert "not ready after 8 s" in swap.stdout  # the journal excerpt
    # make-before-break: night served throughout; the host is exactly as before
    assert_served_throughout(traffic, ["night@spark3"])
    assert sparks.state() == before


def test_a_model_that_crashes_while_loading_is_rolled_back(sparks):
    sparks.models["spark3"] = [member("day", 8000, 0.5), member("night", 8001, 0.5),
                               member("crash", 8002, 0.5,
                                      environment={"VLLM_STANDIN_FAIL": "1"})]
    sparks.write()
    assert run_deploy(sparks.inventory).returncode == 0
    before = sparks.state()
    with sparks.fast_traffic() as traffic:
        steady(traffic)
        swap = sparks.swap("crash")
        steady(traffic, 5)
    assert swap.returncode != 0
    assert "swap (break-before-make)" in swap.stdout
    assert "engine core initialisation failed" in swap.stdout
    # break-before-make: night, the cloud while crash loaded, night again
    assert_served_throughout(traffic, ["night@spark3", "cloud", "night@spark3"])
    assert sparks.state() == before


def journal_time(host, unit: str, word: str) -> float:
    """When systemd last logged `word` ("Stopping", "Started") for `unit`, on the
    kernel's monotonic clock, which the simulated Sparks share with this machine
    (systemd unloads a stopped, disabled unit, and its timestamps with it)."""
    line = ssh(host, f"journalctl -u {unit} -o short-monotonic --no-pager | "
                     f"grep '{word}' | tail -1").stdout  # "[ 3850.12] host systemd..."
    return float(line.split("]")[0].strip("[ "))


def test_a_swap_to_a_model_on_the_hub_downloads_it_before_the_old_one_drains(sparks):
    repo = sparks.hub.root / "sparkstack-test" / "fresh-model"
    fm.write_model(repo, fm.LLAMA_31_8B, fm.dense(fm.LLAMA_31_8B), shards=2)
    with open(repo / "model-00001-of-00002.safetensors", "ab") as f:
        f.write(b"\1" * 8 * 1024 * 1024)
    sparks.models["spark3"] = [member("day", 8000, 0.5), member("night", 8001, 0.5),
                               member("fresh", 8002, 0.5,
                                      model="sparkstack-test/fresh-model")]
    host, hub = sparks.hosts[0], sparks.hub
    sparks.write(prefetch_weights=True)
    assert run_deploy(sparks.inventory).returncode == 0  # fresh stands by
    with sparks.fast_traffic() as traffic:
        steady(traffic)
        swap = sparks.swap("fresh")
        steady(traffic)
    assert swap.returncode == 0, swap.stdout[-3000:]
    assert "swap (break-before-make): stop sparkstack-vllm-night.service; start " \
           "sparkstack-vllm-fresh.service" in swap.stdout
    assert "download: all files: " in swap.stdout and "(100%)" in swap.stdout
    downloaded = max(t for t, path in hub.answered if "/resolve/" in path)
    assert downloaded < journal_time(host, NIGHT, "Stopping")
    assert_served_throughout(traffic, ["night@spark3", "cloud", "fresh@spark3"])
    cached = ssh(host, "cd /var/lib/sparkstack/vllm/cache/huggingface/hub/"
                       "models--sparkstack-test--fresh-model/snapshots/* && "
                       "stat -c '%U %n' *").stdout.split("\n")
    assert sorted(line for line in cached if line) == [
        "vllm config.json", "vllm model-00001-of-00002.safetensors",
        "vllm model-00002-of-00002.safetensors"]


def test_a_model_served_by_two_sparks_is_swapped_one_spark_at_a_time(sparks):
    """spark4 joins with the same swap group; `fast` is load-balanced over both. A
    swap breaks before it makes on each, one Spark at a time: `fast` never leaves the
    local models."""
    sparks.boot("spark4", 4)
    sparks.models = {name: [member("day", 8000, 0.5), member("night", 8001, 0.5)]
                     for name in ("spark3", "spark4")}
    sparks.write()
    result = run_deploy(sparks.inventory)
    assert result.returncode == 0, result.output[-3000:]
    assert sparks.swap("day").returncode == 0  # spark3 back on day, spark4 on day already
    spark3, spark4 = sparks.hosts
    with sparks.fast_traffic() as traffic:
        steady(traffic)
        swap = sparks.swap("night")
        steady(traffic)
    assert swap.returncode == 0, swap.stdout[-3000:]
    for name in ("spark3", "spark4"):
        assert (f"[{name}] swap (break-before-make): stop sparkstack-vllm-day.service; "
                "start sparkstack-vllm-night.service") in swap.stdout
    assert traffic.failures() == [], traffic.failures()[:3]
    assert traffic.rate("fast") >= 5
    seen = traffic.sequence("fast")
    assert "cloud" not in seen, seen
    assert {"day@spark3", "day@spark4"} <= set(seen) and seen[-2:] in (
        ["night@spark3", "night@spark4"], ["night@spark4", "night@spark3"]), seen
    # one at a time: the second Spark stopped its old model only once the first one's
    # new model was ready
    first, second = sorted((spark3, spark4), key=lambda h: journal_time(h, DAY, "Stopping"))
    assert journal_time(first, NIGHT, "Started") < journal_time(second, DAY, "Stopping")
