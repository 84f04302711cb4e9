"""What one host needs to know about the others: who serves which model where."""

from __future__ import annotations

from dataclasses import dataclass

from sparkstack_host.contract import backend_id, http_url

from .settings import HostSettings


@dataclass(frozen=True)
class Replica:
    """One vLLM unit in the fleet serving a model, as a given LiteLLM host reaches it."""

    host: str
    address: str
    port: int
    served_name: str
    max_model_len: int
    swap_group: str = ""

    @property
    def id(self) -> str:
        return backend_id(self.host, self.port)

    @property
    def url(self) -> str:
        return http_url(self.address, self.port)

    @property
    def api_base(self) -> str:
        return f"{self.url}/v1"


class Fleet:
    def __init__(self, hosts: list[HostSettings]):
        self.hosts = {h.name: h for h in hosts}

    def __getitem__(self, name: str) -> HostSettings:
        return self.hosts[name]

    def replicas_of(self, name: str, litellm_host: HostSettings) -> list[Replica]:
        """Every vLLM unit in the fleet serving `name` (a served name, or a swap group:
        each of its members; the readiness gate routes the one that runs), as
        `litellm_host` reaches it."""
        found = []
        for h in self.hosts.values():
            if not h.has("vllm"):
                continue
            # loopback only for this host's own vLLM, and only while it binds there
            local = h.name == litellm_host.name and self.vllm_bind_address(h) == "127.0.0.1"
            for m in h.models:
                if name in (m["name"], m["swap_group"]):
                    address = "127.0.0.1" if local else h.address
                    found.append(Replica(h.name, address, m["port"], m["name"],
                                         m["max_model_len"], m["swap_group"]))
        return found

    def litellm_hosts_routing_to(self, host: HostSettings, model: dict) -> list[HostSettings]:
        """The hosts whose LiteLLM routes to `model` on `host`."""
        return [h for h in self.hosts.values() if h.has("litellm") and any(
            r.host == host.name and r.port == model["port"]
            for profile in h["profiles"].values() for local in profile.get("local", [])
            for r in self.replicas_of(local, h))]

    def cluster_parts(self, host: HostSettings) -> list[tuple[HostSettings, dict, int]]:
        """The models across Sparks that `host` runs a part of for another Spark: (the
        leader, its model entry, this host's node rank)."""
        found = []
        for leader in self.hosts.values():
            for m in leader.models if leader.has("vllm") and leader.name != host.name else []:
                members = (m.get("cluster") or {}).get("hosts", [])
                if host.name in members:
                    found.append((leader, m, members.index(host.name)))
        return found

    def vllm_bind_address(self, host: HostSettings) -> str:
        """Loopback unless another host's LiteLLM routes to this host's models."""
        served = {name for m in host.models for name in (m["name"], m["swap_group"]) if name}
        for other in self.hosts.values():
            if other.name == host.name or not other.has("litellm"):
                continue
            for profile in other["profiles"].values():
                if served & set(profile.get("local", [])):
                    return host.address
        return "127.0.0.1"

    def addresses(self) -> list[str]:
        return sorted({h.address for h in self.hosts.values()})
