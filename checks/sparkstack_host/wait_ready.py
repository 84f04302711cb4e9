"""Wait until a URL answers 200, for a unit's ExecStartPost.

    sparkstack-wait-ready URL [--timeout SECONDS] [--pid PID] [--unix SOCKET]

The unit then stays "activating" while its service loads and becomes "active" only once
it serves, so `systemctl start` returns when the service is ready. Exits non-zero when
the timeout passes, when the service's main process dies first, or, fast, with
`--own-port`, when another user's process holds the URL's port (the service then cannot
listen, and a process that does not exit on that would keep the unit "activating" until
its timeout; a stranger answering 200 there would be taken for the service). With
`--unix` the URL's path is asked over that unix socket (a LiteLLM process of the front
door). Standard library only.
"""
import argparse
import http.client
import os
import socket
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

from .cluster_node import missing

HELD_SECONDS = 5  # how long a stranger must hold the port before we give up


def listening_uids(port: int) -> set[int]:
    """The owners of the sockets listening on `port` in this network namespace (from
    /proc/self/net, which stays visible under ProcSubset=pid)."""
    uids = set()
    for table in ("tcp", "tcp6"):
        try:
            lines = open(f"/proc/self/net/{table}").read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                uids.add(int(fields[7]))
    return uids


POLL = 0.1  # seconds between /health probes: the route goes on this soon after the port opens


class UnixHTTPConnection(http.client.HTTPConnection):
    """HTTP over a unix socket (the host part of the URL is only sent as Host)."""

    def __init__(self, path: str, timeout: float = 5):
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.unix_path)


def unix_get(path: str, url_path: str, timeout: float = 5) -> tuple[int, bytes]:
    conn = UnixHTTPConnection(path, timeout)
    try:
        conn.request("GET", url_path)
        reply = conn.getresponse()
        return reply.status, reply.read()
    finally:
        conn.close()


def status_of(url: str, unix: str | None) -> int:
    if unix:
        return unix_get(unix, urllib.parse.urlsplit(url).path or "/")[0]
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status
    except urllib.error.HTTPError as e:
        return e.code


def held_by_a_stranger(port: int) -> bool:
    """Someone listens on the port, and not as this service's user (which this program,
    its ExecStartPost, runs as)."""
    uids = listening_uids(port)
    return bool(uids) and os.getuid() not in uids


MISSING_EVERY = 10  # seconds between a cluster leader's notes of the nodes not joined


def say_missing(members: dict[str, str], port: int) -> list[str]:
    """A cluster's leader waits for every node (vLLM answers only once all have joined):
    name the ones it has no connection with over the direct link."""
    absent = missing(None, list(members.values()))
    names = [f"{name} ({address})" for name, address in members.items() if address in absent]
    if names:
        print(f"sparkstack-wait-ready: waiting for cluster node(s) {', '.join(names)} to "
              f"join (master port {port}); is its unit running?", file=sys.stderr,
              flush=True)
    return names


def main() -> int:
    p = argparse.ArgumentParser(prog="sparkstack-wait-ready")
    p.add_argument("url")
    p.add_argument("--timeout", type=float, default=300)
    p.add_argument("--pid", type=int, default=0, help="give up if this process exits")
    p.add_argument("--own-port", action="store_true",
                   help="the service listens on the URL's port itself (no socket held by "
                        "systemd): give up when another user's process holds it")
    p.add_argument("--unix", metavar="SOCKET", help="ask over this unix socket")
    p.add_argument("--member", action="append", default=[], metavar="HOST=ADDRESS",
                   help="a cluster's other node (its link address): while waiting, say "
                        "which have not joined on --master-port")
    p.add_argument("--master-port", type=int, default=0)
    args = p.parse_args()
    members = dict(m.split("=", 1) for m in args.member)
    said_at = time.monotonic()
    deadline = time.monotonic() + args.timeout
    last = "no answer yet"
    port = urllib.parse.urlsplit(args.url).port if args.own_port else None
    held_since = None
    while time.monotonic() < deadline:
        if args.pid:
            try:
                os.kill(args.pid, 0)
            except ProcessLookupError:
                print(f"sparkstack-wait-ready: main process {args.pid} exited while loading",
                      file=sys.stderr)
                return 1
            if port and held_by_a_stranger(port):
                held_since = held_since or time.monotonic()
                if time.monotonic() - held_since >= HELD_SECONDS:
                    print(f"sparkstack-wait-ready: port {port} is held by another process, "
                          "not by this service, which therefore cannot listen there: stop "
                          "that process or give this service another port", file=sys.stderr)
                    return 1
                time.sleep(0.5)
                continue
            held_since = None
        try:
            status = status_of(args.url, args.unix)
            if status == 200:
                return 0
            last = f"HTTP {status}"
        except (OSError, http.client.HTTPException) as e:
            last = str(getattr(e, "reason", e))
        if members and time.monotonic() - said_at >= MISSING_EVERY:
            said_at = time.monotonic()
            say_missing(members, args.master_port)
        time.sleep(POLL)
    print(f"sparkstack-wait-ready: {args.url} not ready after {args.timeout:.0f} s ({last})",
          file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
