"""A model that spans Sparks, on vLLM's own multi-node launch (no Ray: the shipped CPU
package refuses Ray, and the multi-node launch is what runs unmodified on both).

The leader (the model entry's host, listed first in `cluster.hosts`) runs `vllm serve`
with the API; every other host runs the same command `--headless` with its node rank.
Each unit gets the direct link's environment the NVIDIA playbooks set. WIP (issue 21):
the units, their order, the gates and day two are not wired yet.
"""

from __future__ import annotations

from ...settings import HostSettings

DEFAULT_MASTER_PORT = 29500


def link_environment(s: HostSettings) -> dict[str, str]:
    """This host's side of the direct link: which interface NCCL, Gloo, the tensor
    parallel sockets and UCX use, and its address on it."""
    ifname = s["link_interface"]
    return {"NCCL_SOCKET_IFNAME": ifname, "GLOO_SOCKET_IFNAME": ifname,
            "TP_SOCKET_IFNAME": ifname, "UCX_NET_DEVICES": ifname,
            "VLLM_HOST_IP": s["link_address"]}


def node_args(model: dict, rank: int, leader_address: str) -> list[str]:
    """What one node adds to `vllm serve` for its part of `model` (rank 0: the leader)."""
    c = model["cluster"]
    args = ["--tensor-parallel-size", str(c["tensor_parallel_size"]),
            "--pipeline-parallel-size", str(c.get("pipeline_parallel_size", 1)),
            "--nnodes", str(len(c["hosts"])), "--node-rank", str(rank),
            "--master-addr", leader_address,
            "--master-port", str(c.get("master_port", DEFAULT_MASTER_PORT))]
    return args + (["--headless"] if rank else [])


def parts_on(host: str, hosts: list[HostSettings]) -> list[tuple[dict, int, str]]:
    """Each cluster model `host` runs a part of: (the leader's model entry, this host's
    rank, the leader's link address)."""
    found = []
    for leader in hosts:
        for m in leader.models if leader.has("vllm") else []:
            members = (m.get("cluster") or {}).get("hosts", [])
            if host in members:
                found.append((m, members.index(host), leader["link_address"]))
    return found
