"""Wait until a URL answers 200, for a unit's ExecStartPost.

    sparkstack-wait-ready URL [--timeout SECONDS] [--pid PID]

The unit then stays "activating" while its service loads and becomes "active" only once
it serves, so `systemctl start` returns when the service is ready. Exits non-zero when
the timeout passes or the service's main process dies first. Standard library only.
"""
import argparse
import os
import sys
import time
import urllib.error
import urllib.request


def main() -> int:
    p = argparse.ArgumentParser(prog="sparkstack-wait-ready")
    p.add_argument("url")
    p.add_argument("--timeout", type=float, default=300)
    p.add_argument("--pid", type=int, default=0, help="give up if this process exits")
    args = p.parse_args()
    deadline = time.monotonic() + args.timeout
    last = "no answer yet"
    while time.monotonic() < deadline:
        if args.pid:
            try:
                os.kill(args.pid, 0)
            except ProcessLookupError:
                print(f"sparkstack-wait-ready: main process {args.pid} exited while loading",
                      file=sys.stderr)
                return 1
        try:
            with urllib.request.urlopen(args.url, timeout=5) as resp:
                if resp.status == 200:
                    return 0
                last = f"HTTP {resp.status}"
        except urllib.error.HTTPError as e:
            last = f"HTTP {e.code}"
        except OSError as e:
            last = str(getattr(e, "reason", e))
        time.sleep(0.5)
    print(f"sparkstack-wait-ready: {args.url} not ready after {args.timeout:.0f} s ({last})",
          file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
