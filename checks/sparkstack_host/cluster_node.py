"""Run one node of a model that spans Sparks, and stop it when the cluster has lost a
member, so that systemd starts it again and the cluster forms anew.

    python -m sparkstack_host.cluster_node --leader ADDR:PORT -- VLLM ARGS...  (a node)
    python -m sparkstack_host.cluster_node --node HOST=ADDR ... -- VLLM ARGS...
                                                                           (the leader)

vLLM's headless node does not exit when the leader stops (seen with the CPU engine): it
would hold its share of the GPU and never join the leader's next start. While the model
runs its nodes keep TCP connections to each other over the direct link, so the launcher
watches those in its network namespace: a node that has no connection left with its
leader, or a leader with none left to a node, for GONE_SECONDS after all had joined,
stops its vLLM and exits non-zero; systemd starts it again (Restart=always) and it
waits for the others. A stop of the unit stops vLLM (SIGTERM forwarded). Standard
library only (this package's console script, in the host venv).
"""
from __future__ import annotations

import argparse
import signal
import socket
import subprocess
import sys
import time

GONE_SECONDS = 10
POLL = 1.0


TABLES = ("/proc/self/net/tcp", "/proc/self/net/tcp6")
MAPPED = "0000000000000000FFFF0000"   # ::ffff:a.b.c.d in /proc/net/tcp6


def hex_address(address: str, port: int) -> str:
    """`address:port` as /proc/net/tcp writes it (IPv4, little-endian hex)."""
    packed = socket.inet_aton(address)
    return f"{int.from_bytes(packed, 'little'):08X}:{port:04X}"


def _ipv4(hex_address_port: str) -> str | None:
    """The IPv4 address of a /proc/net/tcp{,6} address (an IPv4-mapped one in tcp6:
    Python's and torch's sockets listen on both families)."""
    address = hex_address_port.split(":")[0]
    if len(address) == 32 and address.startswith(MAPPED):
        address = address[24:]
    if len(address) != 8:
        return None
    return socket.inet_ntoa(int(address, 16).to_bytes(4, "little"))


def peers(tables=TABLES) -> set[str]:
    """The addresses this network namespace has an ESTABLISHED TCP connection with. A
    model's nodes keep connections to each other over the direct link while it runs
    (torch.distributed's process group, vLLM's message queues); the master port's
    store connection, seen on these machines, does not outlast the start."""
    found = set()
    for table in tables:
        try:
            lines = open(table).read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) > 3 and fields[3] == "01" and (remote := _ipv4(fields[2])):
                found.add(remote)
    return found


def missing(leader: str | None, nodes: list[str], tables=TABLES) -> list[str]:
    """Who this node has no connection with: its leader (on a node), or the nodes (on
    the leader)."""
    connected = peers(tables)
    if leader:
        return [] if leader in connected else [f"the leader at {leader}"]
    return [node for node in nodes if node not in connected]


class Watch:
    """The cluster as one node sees it: whole once every connection it expects is
    there, broken once one has been away `gone_after` seconds after that."""

    def __init__(self, gone_after: float = GONE_SECONDS):
        self.gone_after, self.joined, self.away_since = gone_after, False, None

    def broken(self, whole: bool, now: float) -> bool:
        if whole:
            self.joined, self.away_since = True, None
            return False
        if not self.joined:
            return False  # still forming: vLLM waits for the others itself
        self.away_since = self.away_since or now
        return now - self.away_since >= self.gone_after


def run(leader: str | None, nodes: list[str], command: list[str],
        gone_after: float = GONE_SECONDS, poll: float = POLL, tables=TABLES) -> int:
    """`nodes` (on the leader): each node as NAME=ADDRESS (or ADDRESS)."""
    names = {}
    for node in nodes:
        name, _, address = node.rpartition("=")
        names[address] = f"{name} ({address})" if name else address
    child = subprocess.Popen(command)
    stopping = []

    def forward(signum, _frame):
        stopping.append(signum)
        child.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    watch = Watch(gone_after)
    while child.poll() is None:
        gone = [names.get(who, who) for who in missing(leader, list(names), tables)]
        if not stopping and watch.broken(not gone, time.monotonic()):
            print(f"sparkstack-cluster-node: {', '.join(gone)} gone (no connection for "
                  f"{gone_after:.0f} s): stopping this part of the model; it starts again "
                  "and waits for the others", file=sys.stderr, flush=True)
            child.terminate()
            try:
                child.wait(timeout=30)
            except subprocess.TimeoutExpired:
                child.kill()
            child.wait()
            return 1
        time.sleep(poll)
    return 0 if stopping else child.returncode


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="sparkstack-cluster-node")
    p.add_argument("--leader", metavar="ADDR:PORT",
                   help="on a node: the leader's link address and master port")
    p.add_argument("--node", action="append", default=[], metavar="HOST=ADDR",
                   help="on the leader: each other node, with its link address")
    p.add_argument("command", nargs=argparse.REMAINDER,
                   help="-- then this node's vllm command line")
    args = p.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        p.error("give the node's vllm command after --")
    if args.leader:
        return run(args.leader.rpartition(":")[0], [], command)
    if not args.node:
        p.error("give --leader ADDR:PORT (a node) or --node HOST=ADDR ... (the leader)")
    return run(None, args.node, command)


if __name__ == "__main__":
    sys.exit(main())
