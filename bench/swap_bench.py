"""Model swaps under client traffic, on a simulated Spark (as root, from the repo root):

    .venv/bin/python -m bench.swap_bench [--load 3] [--rate 6]

Deploys one Spark (PostgreSQL, LiteLLM, vLLM) whose profile `fast` is served by a swap
group of two members, with the cloud stand-in as the cloud, then swaps the group back
and forth while openai and anthropic clients (no retries) ask `fast`: make-before-break
(both members fit at once), then break-before-make (each needs the other's memory).
Prints, per path: requests sent and failed, the time `fast` was off the local models
(target: 0 s make-before-break; at most the new model's load time + 5 s
break-before-make) and the swap's total duration.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from sparkstack.settings import REPO_ROOT
from sparkstack.simulated import fleet
from sparkstack.simulated.inventory import write_inventory
from tests.doubles.cloud_standin import CloudStandin
from tests.e2e.helpers import run_deploy
from tests.e2e.traffic import Traffic

SPARKSTACK = str(Path(sys.executable).with_name("sparkstack"))


def inventory(work: Path, host, cloud: CloudStandin, gmu: float, load: float) -> Path:
    members = [{"name": name, "model": "Qwen/Qwen3-4B-Instruct-2507", "port": port,
                "gpu_memory_utilization": gmu, "swap_group": "fast-group"}
               for name, port in (("day", 8000), ("night", 8001))]
    return write_inventory(work / "inventory.py", [host], {
        "secrets_dir": str(work / "secrets"), "cloud_api_base": cloud.api_base,
        "cloud_api_key": cloud.api_key, "litellm_model_aliases": {},
        "profiles": {"fast": {"local": ["fast-group"], "cloud": "openrouter/fast"}},
        "vllm_environment": {"VLLM_STANDIN_LOAD_SECONDS": str(load)}},
        {host.name: {"roles": ["postgres", "vllm", "litellm"], "models": members,
                     "litellm_bind_address": host.address}})


def measure(label: str, inv: Path, traffic_of, to: str, load: float) -> None:
    with traffic_of() as traffic:
        time.sleep(3)
        start = time.monotonic()
        proc = subprocess.run([SPARKSTACK, "swap", "-i", str(inv), to], cwd=REPO_ROOT,
                              capture_output=True, text=True)
        took = time.monotonic() - start
        time.sleep(3)
    if proc.returncode != 0:
        raise SystemExit(f"swap to {to} failed:\n{proc.stderr[-3000:]}")
    mode = "make-before-break" if "make-before-break" in proc.stderr else "break-before-make"
    target = "0 s" if mode == "make-before-break" else f"<= {load + 5:.0f} s"
    print(f"{label} ({mode}): {len(traffic.answers)} requests "
          f"({traffic.rate('fast'):.1f}/s), {len(traffic.failures())} failed; `fast` off "
          f"the local models for {traffic.off_local('fast'):.1f} s (target {target}); "
          f"swap took {took:.1f} s; answered by {' -> '.join(traffic.sequence('fast'))}")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--load", type=float, default=3.0, help="the stand-in's load time (s)")
    p.add_argument("--rate", type=float, default=6.0, help="requests/s on `fast`")
    args = p.parse_args()
    work = REPO_ROOT / ".sim" / "bench-swap"
    fleet.down_all()
    fleet.ensure_network()
    with CloudStandin(fleet.BRIDGE_ADDR) as cloud:
        cloud.server.RequestHandlerClass.log_message = lambda *a: None  # quiet
        host = fleet.boot("spark1", 1)
        inv = inventory(work, host, cloud, 0.2, args.load)
        first = run_deploy(inv)
        if first.returncode != 0:
            raise SystemExit(first.output[-3000:])
        key = json.loads((work / "secrets" / "hosts" / "spark1.json").read_text())

        def traffic():
            return Traffic(f"http://{host.address}:4000", key["litellm_master_key"],
                           ["fast"], rate=args.rate)

        measure("day -> night", inv, traffic, "night", args.load)
        measure("night -> day", inv, traffic, "day", args.load)
        inv = inventory(work, host, cloud, 0.5, args.load)  # too big to run side by side
        if run_deploy(inv).returncode != 0:
            raise SystemExit("re-deploy with bigger budgets failed")
        measure("day -> night", inv, traffic, "night", args.load)
        measure("night -> day", inv, traffic, "day", args.load)
    fleet.down_all()


if __name__ == "__main__":
    main()
