"""Deploy timings on simulated Sparks (run as root on the controller, from the repo root):

    .venv/bin/python -m bench.deploy_bench [--hosts 3]

Prints: the first deploy of a freshly booted Spark and its slowest operations, the
no-op re-deploy of one host (median of 3) and where its time goes (start-up, SSH
connection, planning with the facts it reads, operations with the commands they run),
the no-op re-deploy of N hosts in parallel (median of 3) with its ratio to one host,
and `sparkstack health` on one healthy host and on all N (median of 5 each). Package
caches on this machine are reused between runs (as the test fleet bind-mounts them).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from sparkstack.simulated import fleet
from sparkstack.simulated.inventory import write_inventory

REPO = Path(__file__).resolve().parents[1]
PYINFRA = str(Path(sys.executable).with_name("pyinfra"))


@dataclass
class Run:
    seconds: float
    ops: list[tuple[float, str]] = field(default_factory=list)
    phases: dict[str, float] = field(default_factory=dict)
    facts: int = 0
    commands: int = 0

    def breakdown(self) -> str:
        p = self.phases
        return (f"start-up {p['startup']:.2f} s, connection {p['connection']:.2f} s, "
                f"planning {p['planning']:.2f} s ({self.facts} fact round trip(s)), "
                f"operations {p['operations']:.2f} s ({self.commands} command(s) run), "
                f"results and disconnect {p['finish']:.2f} s")


def deploy(inventory: Path) -> Run:
    """Run the deploy (pyinfra --debug, to see every round trip); time its phases and
    each operation."""
    start = time.monotonic()
    proc = subprocess.Popen([PYINFRA, "-y", "--debug", str(inventory), "deploy.py"],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    run, marks = Run(0), {}
    current, since = None, None
    for line in proc.stdout:
        now = time.monotonic() - start
        for key, text in (("connect", "--> Connecting to hosts"),
                          ("plan", "--> Preparing operation files"),
                          ("execute", "--> Beginning operation run"),
                          ("results", "--> Results")):
            if line.startswith(text):
                marks.setdefault(key, now)
        if "Getting fact:" in line:
            run.facts += 1
        elif "Running command on" in line:
            run.commands += 1
        if line.startswith("--> Starting operation:"):
            if current:
                run.ops.append((now - since, current))
            current, since = line.split(":", 1)[1].strip(), now
        elif line.startswith("--> Results") and current:
            run.ops.append((now - since, current))
            current = None
    if proc.wait() != 0:
        raise SystemExit(f"deploy of {inventory} failed")
    run.seconds = time.monotonic() - start
    run.commands -= run.facts  # each fact is one command too
    run.phases = {"startup": marks["connect"], "connection": marks["plan"] - marks["connect"],
                  "planning": marks["execute"] - marks["plan"],
                  "operations": marks["results"] - marks["execute"],
                  "finish": run.seconds - marks["results"]}
    return run


def median_noop(inventory: Path, runs: int = 3) -> Run:
    found = sorted((deploy(inventory) for _ in range(runs)), key=lambda r: r.seconds)
    return found[len(found) // 2]


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--hosts", type=int, default=3)
    args = p.parse_args()
    work = REPO / ".sim" / "bench"
    fleet.down_all()
    hosts = [fleet.boot("spark1", 1)]
    one = write_inventory(work / "one.py", hosts, {"secrets_dir": str(work / "secrets")})
    first = deploy(one)
    print(f"first deploy, 1 fresh host: {first.seconds:.1f} s")
    for seconds, name in sorted(first.ops, reverse=True)[:5]:
        print(f"    {seconds:7.1f} s  {name}")
    noop = median_noop(one)
    noop_one = noop.seconds
    print(f"no-op re-deploy, 1 host (median of 3): {noop_one:.2f} s (target <= 6 s)")
    print(f"    {noop.breakdown()}")
    hosts += [fleet.boot(f"spark{i}", i) for i in range(2, args.hosts + 1)]
    many = write_inventory(work / "many.py", hosts, {"secrets_dir": str(work / "secrets")})
    first_many = deploy(many)
    print(f"first deploy of {args.hosts - 1} more fresh hosts in parallel "
          f"(host 1 unchanged): {first_many.seconds:.1f} s")
    noop_many = median_noop(many).seconds
    print(f"no-op re-deploy, {args.hosts} hosts in parallel (median of 3): "
          f"{noop_many:.2f} s = {noop_many / noop_one:.2f} x one host (target <= 1.5 x)")
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
