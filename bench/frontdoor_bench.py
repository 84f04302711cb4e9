"""The front door's cost (nginx and LiteLLM's processes) against the real vLLM engine
directly, on a simulated Spark (run as root on the controller):

    .venv/bin/python -m bench.frontdoor_bench [--seconds 15] [--concurrency 1 16 64]

Deploys PostgreSQL, LiteLLM and the real CPU engine serving the simulation's test model,
with the default number of LiteLLM processes, then with one. For each concurrency it
runs the same lean client (`frontdoor_load.py`, on the Spark itself, one kept-alive
connection per worker, 32 tokens per request) against the engine's port, the front
door's port, and one LiteLLM process's own socket (what nginx adds), and prints
requests/s, p50 and p99 and the front door's ratio and added latency (targets at
concurrency 16: at least 0.8x the engine's requests/s, at most 3 ms added p50).
`--processes 2 --set request_log=false` measures one setup with other settings.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from sparkstack.settings import load_defaults
from sparkstack.simulated import engine, fleet
from sparkstack.simulated.fleet import ssh
from sparkstack.simulated.inventory import write_inventory
from tests.doubles.cloud_standin import CloudStandin
from tests.e2e.helpers import run_deploy

from .real_engine_bench import real_engine_state

HOST, INDEX = "spark9", 9
LOAD = Path(__file__).with_name("frontdoor_load.py")


def run_load(host, target: str, key: str, model: str, concurrency: int,
             seconds: float) -> dict:
    out = ssh(host, f"python3 /tmp/frontdoor_load.py {target} {key} {model} "
                    f"{concurrency} {seconds}", timeout=seconds + 120)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--seconds", type=float, default=15)
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 16, 64])
    p.add_argument("--processes", type=int, nargs="+",
                   help="LiteLLM processes to measure (default: the default, then 1)")
    p.add_argument("--set", action="append", default=[], metavar="SETTING=JSON",
                   help="a further group setting, e.g. request_log=false")
    args = p.parse_args()
    extra = {k: json.loads(v) for k, v in (item.split("=", 1) for item in args.set)}
    hub, tmp = real_engine_state("bench-frontdoor")
    default = load_defaults()["litellm_processes"]
    with CloudStandin(fleet.BRIDGE_ADDR) as cloud:
        host = fleet.boot(HOST, INDEX)
        ssh(host, f"cat > /tmp/frontdoor_load.py <<'EOF'\n{LOAD.read_text()}\nEOF")
        print(f"front door against the engine, {args.seconds:.0f} s each, 32 tokens per "
              "request, client on the Spark:")
        print(f"  {'processes':>9} {'conc.':>5} {'path':<22} {'req/s':>7} {'p50 ms':>8} "
              f"{'p99 ms':>8} {'errors':>6}")
        for processes in args.processes or sorted({default, 2, 1}, reverse=True):
            inventory = write_inventory(tmp / "inventory.py", [host], {
                "secrets_dir": str(tmp / "secrets"), "cloud_api_base": cloud.api_base,
                "cloud_api_key": cloud.api_key, "litellm_processes": processes, **extra},
                {HOST: {"roles": ["postgres", "vllm", "litellm"],
                        "litellm_bind_address": host.address}}, vllm=engine.REAL, hub=hub)
            deployed = run_deploy(inventory)
            assert deployed.returncode == 0, deployed.output[-3000:]
            secrets = json.loads((tmp / "secrets" / "hosts" / f"{HOST}.json").read_text())
            fleet_keys = json.loads((tmp / "secrets" / "fleet.json").read_text())
            master, vllm_key = secrets["litellm_master_key"], fleet_keys["vllm_api_key"]
            for c in args.concurrency:
                paths = {
                    "engine directly": ("http://127.0.0.1:8000", vllm_key, "tiny-chat"),
                    "front door": (f"http://{host.address}:4000", master, "fast"),
                    "one process, no nginx": ("unix:/run/sparkstack-litellm-1/http.sock",
                                              master, "fast")}
                got = {name: run_load(host, *target, c, args.seconds)
                       for name, target in paths.items()}
                for name, r in got.items():
                    print(f"  {processes:>9} {c:>5} {name:<22} {r['rps']:>7.1f} "
                          f"{r['p50']:>8.1f} {r['p99']:>8.1f} {r['errors']:>6}")
                e, f = got["engine directly"], got["front door"]
                print(f"  {processes:>9} {c:>5} {'front door / engine':<22} "
                      f"{f['rps'] / e['rps']:>6.2f}x  added p50 {f['p50'] - e['p50']:+.1f} ms, "
                      f"p99 {f['p99'] - e['p99']:+.1f} ms", flush=True)
    fleet.down_all()


if __name__ == "__main__":
    main()
