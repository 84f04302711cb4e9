"""One operation at a time per Spark: two runs at once on one simulated Spark (the
vLLM stand-in only, so each deploy takes seconds)."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest

from sparkstack.host_shell import NO_WAIT_VARIABLE
from sparkstack.simulated.fleet import ssh
from tests.e2e.conftest import SimFleet
from tests.e2e.helpers import PYINFRA, REPO, run_deploy

pytestmark = pytest.mark.e2e
UNIT = "sparkstack-vllm-qwen3-4b.service"
LOCKED = "! flock -n /run/sparkstack/operation.lock true"


class Spark(SimFleet):
    def __init__(self, tmp, cloud):
        super().__init__(tmp, cloud)
        self.host = self.boot("spark11", 11)

    def inventory_with(self, value: str):
        """An inventory whose model runs with X=value (a change of its unit)."""
        self.inventory = self.tmp / f"inventory-{value}.py"
        return self.write_hosts({
            "roles": ["vllm"], "litellm_model_aliases": {}, "profiles": {},
            "models": [{"name": "qwen3-4b", "model": "Qwen/Qwen3-4B-Instruct-2507",
                        "port": 8000, "environment": {"X": value}}]}, {})

    def start(self, value: str, **env) -> subprocess.Popen:
        return subprocess.Popen([PYINFRA, "-y", str(self.inventory_with(value)), "deploy.py"],
                                cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, env={**os.environ, **env})

    def x(self) -> str:
        env = ssh(self.host, f"systemctl show -p Environment {UNIT}").stdout
        return next(w for w in env.split() if w.startswith("X=")).split("=", 1)[1]

    def wait_locked(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while ssh(self.host, LOCKED, check=False).returncode != 0:
            assert time.monotonic() < deadline, "no run took the lock"
            time.sleep(0.2)


@pytest.fixture(scope="module")
def spark(sim):
    s = sim(Spark)
    first = run_deploy(s.inventory_with("0"))
    assert first.returncode == 0, first.output[-3000:]
    return s


def test_a_second_run_waits_for_the_first_and_both_changes_land_in_order(spark):
    first = spark.start("1")
    spark.wait_locked()
    second = spark.start("2")
    out_second = second.communicate(timeout=600)[0]
    out_first = first.communicate(timeout=600)[0]
    assert first.returncode == 0, out_first[-3000:]
    assert second.returncode == 0, out_second[-3000:]
    assert "waiting: another run holds this Spark (root@" in out_second
    assert "inventory-1.py" in out_second  # the holder's command names its inventory
    assert "the other run is done; this one goes on" in out_second
    # each run planned from what the other had left: both changed something, X=2 runs
    for out in (out_first, out_second):
        assert "Write unit sparkstack-vllm-qwen3-4b.service" in out
    assert spark.x() == "2"


def test_with_no_wait_a_run_refuses_a_spark_another_run_holds(spark):
    first = spark.start("3")
    spark.wait_locked()
    refused = subprocess.run([PYINFRA, "-y", str(spark.inventory_with("4")), "deploy.py"],
                             cwd=REPO, capture_output=True, text=True, timeout=120,
                             env={**os.environ, NO_WAIT_VARIABLE: "1"})
    first.communicate(timeout=600)
    assert refused.returncode != 0
    assert "spark11 is busy: root@" in refused.stdout + refused.stderr
    assert "nothing was changed" in refused.stdout + refused.stderr
    assert first.returncode == 0 and spark.x() == "3"


def test_a_run_that_dies_leaves_no_lock_behind(spark):
    doomed = spark.start("5")
    spark.wait_locked()
    os.kill(doomed.pid, signal.SIGKILL)
    doomed.wait()
    deadline = time.monotonic() + 30
    while ssh(spark.host, LOCKED, check=False).returncode == 0:
        assert time.monotonic() < deadline, "the dead run's lock is still held"
        time.sleep(0.2)
    again = run_deploy(spark.inventory_with("6"), timeout=600)
    assert again.returncode == 0, again.output[-3000:]
    assert "waiting" not in again.output and spark.x() == "6"


def test_read_only_commands_never_wait(spark):
    holder = spark.start("7")
    spark.wait_locked()
    start = time.monotonic()
    spark.inventory_with("7")
    health = spark.sparkstack("health", "--json", timeout=120)
    assert '"check": "gpu"' in health.stdout and time.monotonic() - start < 30
    holder.communicate(timeout=600)
