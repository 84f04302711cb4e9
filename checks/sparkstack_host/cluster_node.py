"""Run one node of a model that spans Sparks, and stop it when the cluster has lost a
member, so that systemd starts it again and the cluster forms anew.

    python -m sparkstack_host.cluster_node --leader ADDR:PORT -- VLLM ARGS...  (a node)
    python -m sparkstack_host.cluster_node --port PORT --node HOST=ADDR ... -- VLLM ARGS...
                                                                           (the leader)

vLLM's headless node does not exit when the leader stops (seen with the CPU engine): it
would hold its share of the GPU and never join the leader's next start. Every node keeps
a connection to the leader's master port (torch.distributed's store) while the model
runs, so the launcher watches those connections in its network namespace: a node whose
connection to the leader has gone, or a leader that misses a node's, for GONE_SECONDS
after all had joined, stops its vLLM and exits non-zero; systemd starts it again
(Restart=always) and it waits for the others. A stop of the unit stops vLLM (SIGTERM
forwarded). Standard library only (run with the vLLM venv's python, this package on
PYTHONPATH).
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


def hex_address(address: str, port: int) -> str:
    """`address:port` as /proc/net/tcp writes it (IPv4, little-endian hex)."""
    packed = socket.inet_aton(address)
    return f"{int.from_bytes(packed, 'little'):08X}:{port:04X}"


def connected(remote: str, port: int, table: str = "/proc/self/net/tcp") -> int:
    """How many ESTABLISHED connections this network namespace has to `remote:port`."""
    want = hex_address(remote, port)
    try:
        lines = open(table).read().splitlines()[1:]
    except OSError:
        return 0
    return sum(1 for line in lines
               if len(fields := line.split()) > 3 and fields[2] == want and fields[3] == "01")


def peers_on(port: int, table: str = "/proc/self/net/tcp") -> set[str]:
    """The addresses with an ESTABLISHED connection to this host's `port` (the leader's
    side: which nodes have joined)."""
    found = set()
    try:
        lines = open(table).read().splitlines()[1:]
    except OSError:
        return found
    for line in lines:
        fields = line.split()
        if len(fields) > 3 and fields[3] == "01" and int(fields[1].rsplit(":", 1)[1], 16) == port:
            found.add(socket.inet_ntoa(int(fields[2].split(":")[0], 16).to_bytes(4, "little")))
    return found


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


def missing(leader: str | None, nodes: list[str], port: int,
            table: str = "/proc/self/net/tcp") -> list[str]:
    """Who this node has no connection with: the leader (on a node), or the nodes that
    have none to this host's master port (on the leader)."""
    if leader:
        return [] if connected(leader, port, table) else [f"the leader at {leader}:{port}"]
    joined = peers_on(port, table)
    return [node for node in nodes if node not in joined]


def run(leader: str | None, nodes: list[str], port: int, command: list[str],
        gone_after: float = GONE_SECONDS, poll: float = POLL,
        table: str = "/proc/self/net/tcp") -> int:
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
        gone = [names.get(who, who) for who in missing(leader, list(names), port, table)] \
            if not leader else missing(leader, [], port, table)
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
    p.add_argument("--port", type=int, help="on the leader: its master port")
    p.add_argument("--node", action="append", default=[], metavar="HOST=ADDR",
                   help="on the leader: each other node, with its link address")
    p.add_argument("command", nargs=argparse.REMAINDER,
                   help="-- then this node's vllm command line")
    args = p.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        p.error("give the node's vllm command after --")
    if args.leader:
        address, _, port = args.leader.rpartition(":")
        return run(address, [], int(port), command)
    if not (args.port and args.node):
        p.error("give --leader ADDR:PORT (a node) or --port and --node (the leader)")
    return run(None, args.node, args.port, command)


if __name__ == "__main__":
    sys.exit(main())
