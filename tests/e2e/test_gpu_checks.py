"""End to end on vLLM-only simulated Sparks: the GPU probe through the GB10 NVML
stand-in (and on a host without it), the memory-fit gate (a local folder, and a model
read from the Hub stand-in by range requests), the health command, and a model that
never becomes ready."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from sparkstack_host.contract import Layout

from sparkstack.simulated import fleet
from sparkstack.simulated.fleet import SSH_KEY, ssh
from tests import fit_models as fm
from tests.e2e.conftest import SimFleet
from tests.e2e.helpers import REPO, run_deploy, unit_starts

pytestmark = pytest.mark.e2e
SPARKSTACK = str(Path(sys.executable).with_name("sparkstack"))
UNIT = "sparkstack-vllm-qwen3-4b.service"


def model(name, port, **extra):
    return {"name": name, "model": "Qwen/Qwen3-4B-Instruct-2507", "port": port,
            "gpu_memory_utilization": 0.15, **extra}


class Pair(SimFleet):
    def __init__(self, tmp, cloud):
        super().__init__(tmp, cloud)
        self.gpu_host = self.boot("spark5", 5)
        self.bare_host = self.boot("spark6", 6, gpu=False)

    def write(self, gpu_models=None, **group):
        self.write_hosts(group, {
            "spark5": {"roles": ["vllm"], "models": gpu_models or [model("qwen3-4b", 8000)]},
            "spark6": {"roles": ["vllm"], "models": [model("qwen3-4b", 8000)]}})

    def health(self, *args) -> subprocess.CompletedProcess:
        return subprocess.run([SPARKSTACK, "health", "-i", str(self.inventory), *args],
                              cwd=REPO, capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def pair(sim):
    p = sim(Pair)
    p.write()
    first = p.deploy()
    assert first.returncode == 0, first.output[-3000:]
    return p


def probe(host) -> tuple[int, str]:
    r = ssh(host, f"{Layout().host_program('sparkstack-gpu')} --json", check=False)
    return r.returncode, r.stdout


def test_gpu_probe_sees_a_gb10_with_memory_from_the_os(pair):
    rc, out = probe(pair.gpu_host)
    report = json.loads(out)
    assert rc == 0
    device = report["devices"][0]
    assert (device["name"], device["compute_capability"]) == ("NVIDIA GB10", "12.1")
    assert report["driver_version"] == "580.95.05" and report["cuda_version"] == "13.0"
    assert device["memory"] is None and report["memory_source"] == "os"
    assert report["memory"]["total_gib"] > 1


def test_a_host_without_the_driver_says_so(pair):
    rc, out = probe(pair.bare_host)
    report = json.loads(out)
    assert rc == 1
    assert report["error"].startswith("no NVIDIA driver/GPU found")
    health = pair.health("--limit", "spark6")
    assert health.returncode == 1
    assert "gpu" in health.stdout and "FAILED" in health.stdout
    assert "what to do: install or repair the NVIDIA driver" in health.stdout


def test_health_of_a_healthy_host_then_of_a_stopped_unit(pair):
    healthy = pair.health("--limit", "spark5", "--json")
    rows = json.loads(healthy.stdout)
    assert healthy.returncode == 0, healthy.stdout
    assert {r["check"] for r in rows} >= {"gpu", "memory", f"unit {UNIT}", "vllm qwen3-4b"}
    ssh(pair.gpu_host, f"systemctl stop {UNIT}")
    try:
        sick = pair.health("--limit", "spark5", "--json")
        rows = {r["check"]: r for r in json.loads(sick.stdout)}
        assert sick.returncode == 1
        assert not rows[f"unit {UNIT}"]["ok"]
        assert rows[f"unit {UNIT}"]["detail"].startswith("inactive")
        assert f"systemctl start {UNIT}" in rows[f"unit {UNIT}"]["advice"]
        assert rows["vllm qwen3-4b"]["detail"].startswith("loading")
    finally:
        ssh(pair.gpu_host, f"systemctl start {UNIT}")


def test_a_simulated_spark_has_a_sparks_memory_whatever_this_machine_has(pair):
    """The fit gate's verdicts below (a 57 GiB model in a 0.4 budget) hold on any CI
    machine: the hosts see a Spark's 121.7 GiB."""
    total_kib = int(ssh(pair.gpu_host, "awk '/^MemTotal/ {print $2}' /proc/meminfo").stdout)
    assert round(total_kib / 1024**2, 1) == 121.7
    assert total_kib == fleet.SPARK_MEMINFO_KIB["MemTotal"]


def test_a_model_larger_than_memory_is_refused_before_any_change(pair, tmp_path):
    host = pair.gpu_host
    fm.write_model(tmp_path / "qwen3-30b-a3b", fm.QWEN3_30B_A3B,
                   fm.qwen3_moe(fm.QWEN3_30B_A3B))
    subprocess.run(
        f"tar -C {tmp_path} -cf - qwen3-30b-a3b | ssh -i {SSH_KEY} -o BatchMode=yes "
        "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR "
        f"root@{host.address} 'mkdir -p /srv/models && tar -C /srv/models -xf -'",
        shell=True, check=True)
    before = unit_starts(host, [UNIT])
    units_before = ssh(host, "ls /etc/systemd/system | grep sparkstack").stdout
    pair.write(gpu_models=[model("qwen3-4b", 8000, max_num_seqs=2),
                           model("big", 8005, model="/srv/models/qwen3-30b-a3b",
                                 gpu_memory_utilization=0.4)])
    result = run_deploy(pair.inventory)
    assert result.returncode != 0
    assert ("host spark5: model big (/srv/models/qwen3-30b-a3b) does not fit, no host "
            "was changed") in result.output
    assert "weights 56.87" in result.output
    assert unit_starts(host, [UNIT]) == before  # the other change was not applied either
    assert ssh(host, "ls /etc/systemd/system | grep sparkstack").stdout == units_before


def test_a_hub_model_too_big_is_refused_from_its_headers_without_a_download(pair,
                                                                            tmp_path):
    """Not on the host yet: the fit gate reads the safetensors headers from the Hub
    (here the Hub stand-in, through hf_endpoint) by range requests."""
    from sparkstack.simulated.hub_standin import HubStandin
    repo = tmp_path / "hub" / "Qwen" / "Qwen3-30B-A3B"
    fm.write_model(repo, fm.QWEN3_30B_A3B, fm.qwen3_moe(fm.QWEN3_30B_A3B))
    for shard in repo.glob("*.safetensors"):  # as if each shard carried its tensors
        with open(shard, "ab") as f:
            f.write(b"\0" * 8 * 1024 * 1024)
    before = unit_starts(pair.gpu_host, [UNIT])
    with HubStandin(tmp_path / "hub", host=fleet.BRIDGE_ADDR) as hub:
        pair.write(fit_check_hub=True, hf_endpoint=hub.endpoint,
                   gpu_models=[model("qwen3-4b", 8000),
                               model("big", 8005, model="Qwen/Qwen3-30B-A3B",
                                     gpu_memory_utilization=0.4)])
        result = run_deploy(pair.inventory)
    assert result.returncode != 0
    assert ("host spark5: model big (Qwen/Qwen3-30B-A3B) does not fit, no host was "
            "changed") in result.output
    assert "weights 56.87" in result.output
    assert "/api/models/Qwen/Qwen3-30B-A3B" in hub.requests
    assert hub.bytes_sent < 4 * 1024 * 1024  # headers only, not the 32 MiB of shards
    assert unit_starts(pair.gpu_host, [UNIT]) == before


def test_a_model_that_never_becomes_ready_fails_the_deploy_with_its_log(pair):
    # a shorter start timeout rewrites the running unit: a swap of its own, first
    pair.write(vllm_start_timeout=6)
    assert run_deploy(pair.inventory).returncode == 0
    pair.write(vllm_start_timeout=6,
               gpu_models=[model("qwen3-4b", 8000),
                           model("stuck", 8003, environment={"VLLM_STANDIN_NEVER_READY": "1"})])
    result = run_deploy(pair.inventory)
    assert result.returncode != 0
    assert "[spark5] last log lines of sparkstack-vllm-stuck.service:" in result.output
    assert "not ready after 6 s" in result.output
    state = ssh(pair.gpu_host, "systemctl is-active sparkstack-vllm-stuck.service",
                check=False).stdout.strip()
    assert state in ("failed", "activating")  # failed, or retrying per Restart=on-failure
