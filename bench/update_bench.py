"""Rolling updates on a fleet of simulated Sparks (as root, from the repo root):

    .venv/bin/python -m bench.update_bench [--hosts 8] [--batch 1]

Boots N Sparks: spark1 runs the whole stack, the others serve `qwen3-4b` to it, and
`fast` is load-balanced over all of them with the cloud stand-in as its fallback.
Prints: a no-op `sparkstack update` of all N hosts against the same update limited to
one host (median of 3 each; target <= 1.5 x), then a real update (the vLLM stand-in
0.1.0 -> 0.2.0 on every host, `--batch` hosts at a time) under openai and anthropic
client traffic on `fast` without retries: the failed requests, the whole update's
time, each host's time and how long `fast` was off that host's model (from its drain
out of every LiteLLM to its undrain).
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

from sparkstack.settings import REPO_ROOT
from sparkstack.simulated import fleet
from sparkstack.simulated.inventory import write_inventory
from tests.doubles.cloud_standin import CloudStandin
from tests.e2e.helpers import run_deploy
from tests.e2e.test_update import MODEL, build_standin
from tests.e2e.traffic import Traffic

SPARKSTACK = str(Path(sys.executable).with_name("sparkstack"))


def inventory(work: Path, hosts, cloud: CloudStandin, package: str) -> Path:
    per_host = {h.name: {"roles": ["vllm"], "models": [MODEL], "vllm_package": package}
                for h in hosts[1:]}
    per_host[hosts[0].name] = {"litellm_bind_address": hosts[0].address, "models": [MODEL],
                               "vllm_package": package}
    return write_inventory(work / "inventory.py", hosts, {
        "secrets_dir": str(work / "secrets"), "cloud_api_base": cloud.api_base,
        "cloud_api_key": cloud.api_key, "litellm_model_aliases": {},
        "profiles": {"fast": {"local": ["qwen3-4b"], "cloud": "openrouter/fast"}}},
        per_host)


def update(inv: Path, *args: str) -> tuple[float, list[tuple[float, str]]]:
    """Run `sparkstack update --yes`; its time and its output lines, each with the
    second it was printed at."""
    start = time.monotonic()
    proc = subprocess.Popen([SPARKSTACK, "update", "-i", str(inv), "--yes", *args],
                            cwd=REPO_ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    lines = [(time.monotonic() - start, line.rstrip()) for line in proc.stdout]
    if proc.wait() != 0:
        raise SystemExit("update failed:\n" + "\n".join(t for _, t in lines[-60:]))
    return time.monotonic() - start, lines


def median_noop(inv: Path, *args: str) -> float:
    times = []
    for _ in range(3):
        seconds, lines = update(inv, *args)
        if not any("up to date, skipped" in t for _, t in lines):
            raise SystemExit("the no-op update was not a no-op")
        times.append(seconds)
    return statistics.median(times)


def per_host(lines: list[tuple[float, str]]) -> dict[str, tuple[float, float]]:
    """host -> (seconds from its pre-check to its undrain, seconds drained)."""
    first, drained, back = {}, {}, {}
    for at, text in lines:
        m = re.match(r"\s*\[(spark\d+)\] (.*)", text)
        if not m:
            continue
        host, step = m.groups()
        if step.startswith("pre-check:"):
            first[host] = at
        elif step.startswith("drain "):
            drained[host] = at
        elif step.startswith("updated, healthy, routed again"):
            back[host] = at
    return {h: (back[h] - first[h], back[h] - drained[h]) for h in back}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--hosts", type=int, default=8)
    p.add_argument("--batch", default="1")
    p.add_argument("--rate", type=float, default=6.0, help="requests/s on `fast`")
    args = p.parse_args()
    work = REPO_ROOT / ".sim" / "bench-update"
    fleet.down_all()
    fleet.ensure_network()
    fleet.ensure_standin_wheels()
    build_standin("0.2.0")
    with CloudStandin(fleet.BRIDGE_ADDR) as cloud:
        cloud.server.RequestHandlerClass.log_message = lambda *a: None  # quiet
        hosts = [fleet.boot(f"spark{i}", i) for i in range(1, args.hosts + 1)]
        inv = inventory(work, hosts, cloud, "vllm-standin==0.1.0")
        first = run_deploy(inv)
        if first.returncode != 0:
            raise SystemExit(first.output[-3000:])
        print(f"first deploy of {args.hosts} fresh Sparks in parallel: {first.seconds:.1f} s")
        one = median_noop(inv, "--limit", "spark1")
        many = median_noop(inv)
        print(f"no-op update, 1 host (median of 3): {one:.2f} s")
        print(f"no-op update, {args.hosts} hosts (median of 3): {many:.2f} s = "
              f"{many / one:.2f} x one host (target <= 1.5 x)")

        inv = inventory(work, hosts, cloud, "vllm-standin==0.2.0")
        key = json.loads((work / "secrets" / "hosts" / "spark1.json").read_text())[
            "litellm_master_key"]
        with Traffic(f"http://{hosts[0].address}:4000", key, ["fast"],
                     rate=args.rate) as traffic:
            time.sleep(3)
            seconds, lines = update(inv, "--batch", args.batch)
            time.sleep(3)
        print(f"vLLM stand-in 0.1.0 -> 0.2.0 on {args.hosts} hosts, batch {args.batch}: "
              f"{seconds:.1f} s; {len(traffic.answers)} requests on `fast` "
              f"({traffic.rate('fast'):.1f}/s), {len(traffic.failures())} failed; "
              f"`fast` on the cloud for {traffic.off_local('fast'):.1f} s")
        for host, (took, off) in sorted(per_host(lines).items(),
                                        key=lambda kv: int(kv[0][5:])):
            print(f"    {host:8} updated in {took:5.1f} s; `fast` off its model {off:5.1f} s")
    fleet.down_all()


if __name__ == "__main__":
    main()
