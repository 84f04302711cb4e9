"""A model that spans Sparks, on vLLM's own multi-node launch (no Ray: the shipped CPU
package refuses Ray, and the multi-node launch runs unmodified on both).

The model entry sits on its leader (listed first in `cluster.hosts`): its unit is the
model's usual unit, serving the API that LiteLLM routes to, with `--nnodes N
--node-rank 0 --master-addr <its link address> --master-port P`. Every other host of the
cluster runs `sparkstack-cluster-<model>.service`: the same `vllm serve` with its node
rank and `--headless`. Each runs under `sparkstack-cluster-node` (the host package),
which stops it once the cluster has lost a member, so that systemd starts it again and
the cluster forms anew; the leader's readiness wait names the nodes that have not
joined. Every unit gets the direct link's environment the NVIDIA playbooks set.
"""

from __future__ import annotations

from dataclasses import dataclass

from sparkstack_host.contract import CLUSTER_NODE

from ...fleet import Fleet
from ...settings import HostSettings
from ..base import master_port


def link_environment(s: HostSettings) -> dict[str, str]:
    """This host's side of the direct link: the interface NCCL, Gloo, the tensor
    parallel sockets and UCX use (its address on it is VLLM_HOST_IP, set by the unit)."""
    ifname = s["link_interface"]
    return {"NCCL_SOCKET_IFNAME": ifname, "GLOO_SOCKET_IFNAME": ifname,
            "TP_SOCKET_IFNAME": ifname, "UCX_NET_DEVICES": ifname}


def node_args(model: dict, rank: int, leader_address: str) -> list[str]:
    """What one node adds to `vllm serve` for its part of `model` (rank 0: the leader)."""
    c = model["cluster"]
    args = ["--tensor-parallel-size", str(c["tensor_parallel_size"]),
            "--pipeline-parallel-size", str(c.get("pipeline_parallel_size", 1)),
            "--nnodes", str(len(c["hosts"])), "--node-rank", str(rank),
            "--master-addr", leader_address, "--master-port", str(master_port(model))]
    return args + (["--headless"] if rank else [])


@dataclass
class Part:
    """One host's part of a cluster model."""
    model: dict               # the model entry, as its leader has it
    leader: HostSettings
    rank: int                 # 0: the leader
    members: list[HostSettings]

    @property
    def others(self) -> list[HostSettings]:
        return [m for m in self.members if m.name != self.members[self.rank].name]

    def launcher(self, s: HostSettings) -> list[str]:
        """What runs the part's `vllm serve` (and stops it when the cluster broke)."""
        program = s.layout.host_program(CLUSTER_NODE)
        if self.rank:
            port = master_port(self.model)
            return [program, "--leader", f"{self.leader['link_address']}:{port}", "--"]
        nodes = [arg for other in self.others
                 for arg in ("--node", f"{other.name}={other['link_address']}")]
        return [program, *nodes, "--"]

    def wait_args(self) -> list[str]:
        """The leader's readiness wait: say which nodes have not joined."""
        return [arg for other in self.others
                for arg in ("--member", f"{other.name}={other['link_address']}")] + [
            "--master-port", str(master_port(self.model))]


def part_of(s: HostSettings, model: dict, fleet: Fleet) -> Part | None:
    """The leader's part of `model` (an entry of `s`), or None for a one-Spark model."""
    hosts = (model.get("cluster") or {}).get("hosts")
    if not hosts:
        return None
    return Part(model, s, 0, [fleet[name] for name in hosts])


def parts_on(s: HostSettings, fleet: Fleet) -> list[Part]:
    """The parts `s` runs of models that other Sparks lead."""
    return [Part(m, leader, rank, [fleet[name] for name in m["cluster"]["hosts"]])
            for leader, m, rank in fleet.cluster_parts(s)]
