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
import sys
import time
from pathlib import Path

import pytest
from sparkstack_host.contract import Layout

from sparkstack.simulated import fleet
from sparkstack.simulated.fleet import ssh
from sparkstack.simulated.inventory import write_inventory
from tests.doubles.cloud_standin import CloudStandin
from tests.e2e.helpers import REPO, run_deploy, unit_starts
from tests.e2e.traffic import Traffic

pytestmark = pytest.mark.e2e
SPARKSTACK = str(Path(sys.executable).with_name("sparkstack"))
LAYOUT = Layout()
DAY, NIGHT = "sparkstack-vllm-day.service", "sparkstack-vllm-night.service"


def member(name: str, port: int, gmu: float = 0.2, **extra) -> dict:
    return {"name": name, "model": "Qwen/Qwen3-4B-Instruct-2507", "port": port,
            "gpu_memory_utilization": gmu, "swap_group": "fast-group", **extra}


class Fleet:
    def __init__(self, tmp, cloud: CloudStandin):
        self.tmp, self.cloud = tmp, cloud
        self.inventory = tmp / "inventory.py"
        self.hosts = [fleet.boot("spark3", 3)]
        self.models = {"spark3": [member("day", 8000), member("night", 8001)]}

    def write(self, **group) -> None:
        group = {"secrets_dir": str(self.tmp / "secrets"),
                 "cloud_api_base": self.cloud.api_base, "cloud_api_key": self.cloud.api_key,
                 "profiles": {"fast": {"local": ["fast-group"],
                                       "cloud": "openrouter/fast-in-the-cloud"}},
                 "litellm_model_aliases": {},
                 "vllm_environment": {"VLLM_STANDIN_LOAD_SECONDS": "3"}, **group}
        hosts = {"spark3": {"roles": ["postgres", "vllm", "litellm"],
                            "litellm_bind_address": self.hosts[0].address}}
        for h in self.hosts[1:]:
            hosts[h.name] = {"roles": ["vllm"]}
        for name, models in self.models.items():
            hosts[name]["models"] = models
        write_inventory(self.inventory, self.hosts, group, hosts)

    def traffic(self) -> Traffic:
        key = json.loads((self.tmp / "secrets" / "hosts" / "spark3.json").read_text())
        return Traffic(f"http://{self.hosts[0].address}:4000", key["litellm_master_key"],
                       ["fast"], rate=6)

    def swap(self, model: str) -> subprocess.CompletedProcess:
        """`sparkstack swap MODEL`; its whole output in .stdout."""
        return subprocess.run([SPARKSTACK, "swap", "-i", str(self.inventory), model],
                              cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, timeout=600)

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


def steady(traffic: Traffic, seconds: float = 3) -> None:
    time.sleep(seconds)


@pytest.fixture(scope="module")
def sparks(tmp_path_factory):
    fleet.down_all()
    fleet.ensure_network()
    with CloudStandin(fleet.BRIDGE_ADDR) as cloud:
        f = Fleet(tmp_path_factory.mktemp("swap"), cloud)
        f.write()
        first = run_deploy(f.inventory)
        assert first.returncode == 0, first.output[-3000:]
        yield f
    fleet.down_all()


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


def test_an_on_demand_swap_makes_before_it_breaks_and_a_deploy_keeps_it(sparks):
    with sparks.traffic() as traffic:
        steady(traffic)
        swap = sparks.swap("night")
        steady(traffic)
    assert swap.returncode == 0, swap.stdout[-3000:]
    assert "swap (make-before-break): stop sparkstack-vllm-day.service; start " \
           "sparkstack-vllm-night.service" in swap.stdout
    # the profile never left the local models: day, then night, never the cloud
    assert_served_throughout(traffic, ["day@spark3", "night@spark3"])
    assert sparks.health()["swap group fast-group"]["detail"] == \
        "running night; standing by: day"
    # the choice is kept on the host: a deploy changes nothing
    again = run_deploy(sparks.inventory)
    assert again.returncode == 0, again.output[-3000:]
    assert again.grand_total()["changed"] == "-", again.output[-3000:]
    with sparks.traffic() as traffic:
        steady(traffic)
        back = sparks.swap("day")
        steady(traffic)
    assert back.returncode == 0, back.stdout[-3000:]
    assert_served_throughout(traffic, ["night@spark3", "day@spark3"])


def test_a_model_that_needs_the_old_ones_memory_breaks_before_it_makes(sparks):
    sparks.models["spark3"] = [member("day", 8000, 0.5), member("night", 8001, 0.5)]
    sparks.write()
    started = unit_starts(sparks.hosts[0], [DAY])
    # day's budget changes: a swap in place, day to day
    with sparks.traffic() as traffic:
        steady(traffic)
        result = run_deploy(sparks.inventory)
        steady(traffic)
    assert result.returncode == 0, result.output[-3000:]
    assert "swap (break-before-make): stop sparkstack-vllm-day.service; start " \
           "sparkstack-vllm-day.service" in result.output
    assert unit_starts(sparks.hosts[0], [DAY]) != started
    # meanwhile `fast` went to its cloud fallback, then back
    assert_served_throughout(traffic, ["day@spark3", "cloud", "day@spark3"])
    with sparks.traffic() as traffic:
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
    with sparks.traffic() as traffic:
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
    with sparks.traffic() as traffic:
        steady(traffic)
        swap = sparks.swap("crash")
        steady(traffic, 5)
    assert swap.returncode != 0
    assert "swap (break-before-make)" in swap.stdout
    assert "engine core initialisation failed" in swap.stdout
    # break-before-make: night, the cloud while crash loaded, night again
    assert_served_throughout(traffic, ["night@spark3", "cloud", "night@spark3"])
    assert sparks.state() == before
