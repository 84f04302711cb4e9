"""Deploy timings on simulated Sparks (run as root on the controller):

    .venv/bin/python -m bench.deploy_bench [--hosts 3]

Prints: the first deploy of a freshly booted Spark and its slowest operations, the
no-op re-deploy of one host (median of 3), the no-op re-deploy of N hosts in parallel
(median of 3) with its ratio to one host, and `sparkstack health` on one healthy host
and on all N (median of 5 each). Package caches on this machine are
reused between runs (as the test fleet bind-mounts them).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

from sparkstack.simulated import fleet
from sparkstack.simulated.inventory import write_inventory

PYINFRA = str(Path(sys.executable).with_name("pyinfra"))


def deploy(inventory: Path) -> tuple[float, list[tuple[float, str]]]:
    """Run the deploy; return total seconds and (seconds, operation) per operation."""
    start = time.monotonic()
    proc = subprocess.Popen([PYINFRA, "-y", str(inventory), "deploy.py"], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    ops, current, since = [], None, None
    for line in proc.stdout:
        if line.startswith("--> Starting operation:"):
            now = time.monotonic()
            if current:
                ops.append((now - since, current))
            current, since = line.split(":", 1)[1].strip(), now
        elif line.startswith("--> Disconnecting") and current:
            ops.append((time.monotonic() - since, current))
            current = None
    if proc.wait() != 0:
        raise SystemExit(f"deploy of {inventory} failed")
    return time.monotonic() - start, ops


def median_noop(inventory: Path, runs: int = 3) -> float:
    return statistics.median(deploy(inventory)[0] for _ in range(runs))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--hosts", type=int, default=3)
    args = p.parse_args()
    work = REPO / ".sim" / "bench"
    fleet.down_all()
    hosts = [fleet.boot("spark1", 1)]
    one = write_inventory(work / "one.py", hosts, {"secrets_dir": str(work / "secrets")})
    first, ops = deploy(one)
    print(f"first deploy, 1 fresh host: {first:.1f} s")
    for seconds, name in sorted(ops, reverse=True)[:5]:
        print(f"    {seconds:7.1f} s  {name}")
    noop_one = median_noop(one)
    print(f"no-op re-deploy, 1 host (median of 3): {noop_one:.1f} s (target <= 15 s)")
    hosts += [fleet.boot(f"spark{i}", i) for i in range(2, args.hosts + 1)]
    many = write_inventory(work / "many.py", hosts, {"secrets_dir": str(work / "secrets")})
    first_many, _ = deploy(many)
    print(f"first deploy of {args.hosts - 1} more fresh hosts in parallel "
          f"(host 1 unchanged): {first_many:.1f} s")
    noop_many = median_noop(many)
    print(f"no-op re-deploy, {args.hosts} hosts in parallel (median of 3): "
          f"{noop_many:.1f} s = {noop_many / noop_one:.2f} x one host (target <= 1.5 x)")
    health_one = median_health(many, "--limit", "spark1")
    health_all = median_health(many)
    print(f"sparkstack health, 1 healthy host (median of 5): {health_one:.2f} s (target <= 2 s)")
    print(f"sparkstack health, {args.hosts} healthy hosts (median of 5): {health_all:.2f} s "
          "(target <= 3 s)")
    fleet.down_all()


def median_health(inventory: Path, *args: str, runs: int = 5) -> float:
    times = []
    for _ in range(runs):
        start = time.monotonic()
        rc = subprocess.call([str(Path(sys.executable).with_name("sparkstack")), "health",
                              "-i", str(inventory), *args], cwd=REPO,
                             stdout=subprocess.DEVNULL)
        times.append(time.monotonic() - start)
        if rc != 0:
            raise SystemExit(f"health reported a problem on {inventory} {args}")
    return statistics.median(times)


if __name__ == "__main__":
    main()
