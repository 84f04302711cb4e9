"""What the deploy reads from a host: modules of the host package run as themselves
with the host's python3 (nothing of sparkstack needs to be installed there yet).

`snapshot()` is the state of everything a deploy manages on the current host, read in
one round trip the first time it is asked for and kept for the run; the operations in
`operations.py` decide from it whether anything must change.
"""

from __future__ import annotations

import ipaddress
import json
import shlex
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import gevent
from pyinfra import host
from pyinfra.api import FactBase
from sparkstack_host import host_state
from sparkstack_host.contract import (
    CLUSTER_UNIT_GLOB,
    POSTGRES_CLUSTER_UNIT,
    POSTGRES_UNIT,
    UNIT_DIR,
    VLLM_UNIT_GLOB,
)

from .settings import HostSettings


def module_command(module: ModuleType, args: list[str]) -> str:
    """A shell command running `module`'s own source with the host's python3."""
    marker = f"SPARKSTACK_{module.__name__.rsplit('.', 1)[-1].upper()}"
    return (f"python3 - {shlex.join(args)} <<'{marker}'\n"
            f"{Path(module.__file__).read_text()}\n{marker}")


class HostState(FactBase):
    """Files, units, users, packages and PostgreSQL objects the deploy manages."""

    def command(self, args: tuple[str, ...]) -> str:
        return module_command(host_state, list(args))

    def process(self, output):
        return json.loads("\n".join(output))


WANTS_DIR = "multi-user.target.wants"
PACKAGES = ("python3-venv", "sudo", "postgresql", "nginx")


def watched(s: HostSettings) -> tuple[list[str], list[str]]:
    """(hashed, stat-only) patterns: every path a deploy writes on this host. A venv's
    contents are left out but its sparkstack stamps are in; state folders are stat'ed,
    their data never read."""
    layout = s.layout
    hashed = [f"{layout.config_root}/**", f"{layout.install_root}/*",
              f"{layout.install_root}/*/*", f"{layout.install_root}/*/wheels/*",
              f"{layout.install_root}/*/venvs/*/.sparkstack-*",
              f"{layout.install_root}/host/lib/*/.sparkstack-*", f"{UNIT_DIR}/sparkstack-*",
              "/usr/local/share/ca-certificates/sparkstack-*",
              "/etc/apt/apt.conf.d/80sparkstack-*", "/etc/postgresql/*/main/pg_hba.conf",
              "/etc/postgresql/*/main/conf.d/sparkstack.conf",
              f"{UNIT_DIR}/{POSTGRES_CLUSTER_UNIT}.d/sparkstack-*"]
    stat_only = [layout.install_root, layout.config_root, layout.state_root,
                 f"{layout.state_root}/*", f"{layout.state_root}/*/*",
                 f"{layout.state_root}/*/cache/*",
                 # template instances (LiteLLM's processes) are enabled by these links
                 f"{UNIT_DIR}/{WANTS_DIR}/sparkstack-*"]
    return hashed, stat_only


@dataclass
class Snapshot:
    data: dict
    patterns: list[str]

    def covers(self, path: str) -> bool:
        return any(host_state.covers(path, p) for p in self.patterns)

    def file(self, path: str) -> dict | None:
        return self.data["files"].get(path.rstrip("/"))

    def files_matching(self, pattern: str) -> list[str]:
        return sorted(p for p in self.data["files"] if host_state.covers(p, pattern))

    def content(self, path: str) -> str | None:
        return self.data["contents"].get(path)

    def running(self, unit: str) -> bool:
        # what pyinfra's SystemdStatus calls running
        return self.data["units"].get(unit, {}).get("sub") in (
            "running", "waiting", "exited", "listening", "mounted")

    def enabled(self, unit: str) -> bool:
        return self.data["units"].get(unit, {}).get("enabled") in ("enabled", "static")

    def user(self, name: str) -> dict | None:
        return self.data["users"].get(name)

    def installed(self, packages: list[str]) -> bool:
        return set(packages) <= set(self.data["packages"])

    @property
    def postgres_objects(self) -> list[str] | None:
        return self.data["postgres"]

    def can_bind(self, address: str) -> bool:
        """Is `address` one this host can listen on: any, loopback, or one of its own?"""
        known = self.data.get("addresses") or []
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:  # a host name: the resolver decides
            return True
        # without `ip` on the host its addresses are unknown: leave the check to systemd
        return ip.is_unspecified or ip.is_loopback or not known or any(
            ipaddress.ip_address(a) == ip for a in known)

    @property
    def distribution(self) -> tuple[str, int | None]:
        d = self.data["distribution"]
        major = d["version_id"].split(".")[0]
        return d["id"].lower(), int(major) if major.isdigit() else None


def snapshot() -> Snapshot:
    """The current host's state as the run found it (read once per host and run; the
    first call reads every host of the run, in parallel)."""
    from pyinfra import state

    from .context import current_run
    run = current_run(state)
    with run.guard:  # the hosts are planned in parallel greenlets
        if not run.snapshots:
            prefetch(list(state.inventory.get_active_hosts()))
    return snapshot_of(host)


def prefetch(hosts: list) -> None:
    """Read the snapshots of `hosts` in parallel (a run that plans across the fleet)."""
    gevent.joinall([gevent.spawn(snapshot_of, h) for h in hosts], raise_error=True)


def snapshot_of(target) -> Snapshot:
    """`target`'s state, read once per run; it reads the host and writes nothing."""
    from pyinfra import state

    from .context import current_run
    snapshots = current_run(state).snapshots
    if target.name not in snapshots:
        from pyinfra.api.facts import get_fact
        from pyinfra.context import ctx_host

        s = current_run(state).fleet[target.name]
        hashed, stat_only = watched(s)
        args = [f"--hash={p}" for p in hashed] + [f"--stat={p}" for p in stat_only]
        # what a failed swap puts back: units, manifest, routes, the swap choices
        reads = [f"{UNIT_DIR}/{VLLM_UNIT_GLOB}", f"{UNIT_DIR}/{CLUSTER_UNIT_GLOB}",
                 s.layout.manifest, s.layout.routes_plan,
                 s.layout.swap_choices, s.layout.litellm_config, s.layout.update_history,
                 f"{s.layout.install_root}/*/current/sparkstack-requirements.txt"]
        args += ["--units=sparkstack-*", f"--units={POSTGRES_UNIT}", "--postgres"]
        args += [f"--read={p}" for p in reads]
        args += [f"--users={u}" for u in (s["vllm_user"], s["litellm_user"],
                                          s["openwebui_user"], "postgres")]
        args += [f"--packages={p}" for p in PACKAGES]
        with ctx_host.use(target):
            data = get_fact(state, target, HostState, args=(tuple(args),))
        snapshots[target.name] = Snapshot(data, hashed + stat_only)
    return snapshots[target.name]
