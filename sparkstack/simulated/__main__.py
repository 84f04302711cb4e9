"""Start and stop simulated Sparks and write an inventory for them.

    python -m sparkstack.simulated up [-n N] [--inventory PATH]
    python -m sparkstack.simulated down
    python -m sparkstack.simulated status
"""

import argparse
import sys

from . import fleet
from .inventory import write_inventory


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
        hosts = fleet.up(args.count)
        path = write_inventory(args.inventory, hosts)
        print(f"inventory for {len(hosts)} simulated Spark(s): {path}")
    elif args.cmd == "down":
        fleet.down_all()
    else:
        for h in fleet.running():
            print(f"{h.name}\t{h.address}\tpid {h.pid}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
