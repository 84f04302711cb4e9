"""The services sparkstack deploys, in the order a deploy runs them: the database
first, then the front door (while the models load, their profiles are served by the
cloud), the chat UI, the models. Every part that loops over services (the deploy, the
update, the backups, the bind check) reads this list; adding a service is adding it
here."""

from __future__ import annotations

from ..settings import HostSettings
from . import litellm, openwebui, postgres, vllm
from .base import ServiceInfo, host_requirements, venv_id

SERVICES: list[ServiceInfo] = [postgres.SERVICE, litellm.SERVICE, openwebui.SERVICE,
                               vllm.SERVICE]


def on(s: HostSettings) -> list[ServiceInfo]:
    """The services this host's roles name."""
    return [svc for svc in SERVICES if s.has(svc.role)]


def venvs(s: HostSettings) -> list[tuple[str, str, str]]:
    """(service, label, requirements) of every venv this host runs from: the host
    package's, and each of its services' that has one."""
    return [("host", "host package", host_requirements(s))] + [
        (svc.role, svc.label, svc.requirements(s)) for svc in on(s) if svc.requirements]


__all__ = ["SERVICES", "on", "venvs", "venv_id"]
