"""What one host needs to know about the others: who serves which model where."""

from __future__ import annotations

from dataclasses import dataclass

from .settings import HostSettings


@dataclass(frozen=True)
class Replica:
    """One vLLM unit in the fleet serving a model, as a given LiteLLM host reaches it."""

    host: str
    address: str
    port: int
    served_name: str
    max_model_len: int

    @property
    def id(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.address}:{self.port}"

    @property
    def api_base(self) -> str:
        return f"{self.url}/v1"


class Fleet:
    def __init__(self, hosts: list[HostSettings]):
        self.hosts = {h.name: h for h in hosts}

    def __getitem__(self, name: str) -> HostSettings:
        return self.hosts[name]

    def replicas_of(self, served_name: str, litellm_host: HostSettings) -> list[Replica]:
        """Every vLLM unit in the fleet serving `served_name`, as `litellm_host` reaches it."""
        found = []
        for h in self.hosts.values():
            if not h.has("vllm"):
                continue
            # loopback only for this host's own vLLM, and only while it binds there
            local = h.name == litellm_host.name and self.vllm_bind_address(h) == "127.0.0.1"
            for m in h.models:
                if m["name"] == served_name:
                    address = "127.0.0.1" if local else h.address
                    found.append(Replica(h.name, address, m["port"], served_name,
                                         m["max_model_len"]))
        return found

    def vllm_bind_address(self, host: HostSettings) -> str:
        """Loopback unless another host's LiteLLM routes to this host's models."""
        served = {m["name"] for m in host.models}
        for other in self.hosts.values():
            if other.name == host.name or not other.has("litellm"):
                continue
            for profile in other["profiles"].values():
                if served & set(profile.get("local", [])):
                    return host.address
        return "127.0.0.1"

    def addresses(self) -> list[str]:
        return sorted({h.address for h in self.hosts.values()})
