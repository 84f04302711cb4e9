"""The plan of a rolling update, made before any host changes, from the inventory and
what each host runs now (its snapshot): which hosts differ, in which batch each goes,
and who serves each profile meanwhile. Pure: nothing here touches a host."""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..fleet import Fleet
from ..host_facts import Snapshot
from ..services import registry
from ..settings import HostSettings


def last_update(state: Snapshot, s: HostSettings) -> str:
    """The last update that took effect on a host (its checkpoint's name, which sorts by
    time), or ""."""
    names = (state.content(s.layout.update_history) or "").split()
    return names[-1] if names else ""


def rollback_changes(fleet: Fleet, snapshots: dict[str, Snapshot]) -> tuple[dict, str]:
    """A rollback undoes the last update that changed the fleet, on the hosts it
    changed: every other host already runs what it ran before that update (it failed
    and rolled back there, or never got there). Returns each host's change and the
    update undone."""
    lasts = {name: last_update(state, fleet[name]) for name, state in snapshots.items()}
    target = max(lasts.values(), default="")
    return {name: [f"back to the versions before {target}"] if target and last == target
            else [] for name, last in lasts.items()}, target


def describe_requirements(text: str | None) -> str:
    lines = [line for line in (text or "").splitlines()
             if line.strip() and not line.startswith("#")]
    return " ".join(lines) or "nothing"


def changes(s: HostSettings, state: Snapshot) -> list[str]:
    """What an update changes on this host: each venv whose inputs differ (a venv is
    named by what it is built from, so the `current` links say what runs)."""
    found = []
    for service, label, requirements in registry.venvs(s):
        digest = registry.venv_id(s, requirements)
        link = state.file(f"{s.layout.service_root(service)}/current") or {}
        if link.get("target") != f"venvs/{digest}":
            before = state.content(f"{s.layout.venv(service)}/sparkstack-requirements.txt")
            found.append(f"{label}: {describe_requirements(before)} -> "
                         f"{describe_requirements(requirements)}")
    return found


def batch_size_problem(size: str) -> str | None:
    if size.rstrip("%").isdigit() and int(size.rstrip("%")) > 0:
        return None
    return (f"update: batch = {size!r}: give a number of hosts (e.g. 2) or a share of "
            "them (e.g. 25%)")


def batches(hosts: list[str], size: str) -> list[list[str]]:
    """Split `hosts` into batches of `size` hosts, or `size`% of them (at least one)."""
    if size.endswith("%"):
        n = max(1, math.floor(len(hosts) * float(size[:-1]) / 100))
    else:
        n = max(1, int(size))
    return [hosts[i:i + n] for i in range(0, len(hosts), n)]


def profiles_served(fleet: Fleet) -> dict[str, set[tuple[str, int]]]:
    """Profile -> (host, port) of every local backend any LiteLLM routes it to."""
    served: dict[str, set[tuple[str, int]]] = {}
    for h in fleet.hosts.values():
        if not h.has("litellm"):
            continue
        for name, profile in h["profiles"].items():
            for local in profile.get("local", []):
                for r in fleet.replicas_of(local, h):
                    served.setdefault(name, set()).add((r.host, r.port))
    return served


def has_cloud(h: HostSettings, profile: dict) -> bool:
    return bool(profile.get("cloud")) and bool(h["cloud_api_key"])


def would_go_dark(host: str, fleet: Fleet) -> list[str]:
    """Profiles with no other Spark and no cloud fallback while `host` is drained."""
    dark = []
    for h in fleet.hosts.values():
        if not h.has("litellm"):
            continue
        for name, profile in h["profiles"].items():
            backends = [r.host for local in profile.get("local", [])
                        for r in fleet.replicas_of(local, h)]
            if backends and not has_cloud(h, profile) and not set(backends) - {host}:
                dark.append(name)
    return sorted(set(dark))


@dataclass
class Plan:
    """host -> what changes there (empty: up to date, skipped); the batches in the
    inventory's order; profile -> its backends, for who serves it meanwhile."""

    changes: dict[str, list[str]]
    order: list[list[str]]
    served: dict[str, set[tuple[str, int]]]
    clouds: set[str]            # profiles some LiteLLM can send to the cloud
    nothing: str = "up to date"  # what a host without changes is

    def describe(self) -> str:
        lines = ["update plan:"]
        for i, batch in enumerate(self.order, 1):
            lines.append(f"  batch {i}: {', '.join(batch)}")
            for host in batch:
                for change in self.changes[host]:
                    lines.append(f"    {host}: {change}")
            for name in sorted(self.served):
                others = sorted({f"{h}:{p}" for h, p in self.served[name] if h not in batch})
                meanwhile = ", ".join(others) or ("its cloud model" if name in self.clouds
                                                  else "NOBODY")
                lines.append(f"    meanwhile {name} is served by {meanwhile}")
        for host, found in self.changes.items():
            if not found:
                lines.append(f"  {host}: {self.nothing}, skipped")
        return "\n".join(lines)


def make_plan(fleet: Fleet, snapshots: dict[str, Snapshot], batch: str,
              rollback: bool = False) -> Plan:
    """The plan for the hosts of `snapshots` (this run's hosts, in inventory order)."""
    if rollback:
        found, target = rollback_changes(fleet, snapshots)
        nothing = (f"not changed by {target}, nothing to roll back" if target
                   else "no update took effect, nothing to roll back")
    else:
        found = {name: changes(fleet[name], state) for name, state in snapshots.items()}
        nothing = "up to date"
    clouds = {name for h in fleet.hosts.values() if h.has("litellm")
              for name, p in h["profiles"].items() if p.get("cloud")}
    order = keep_clusters_together(batches([h for h in found if found[h]], batch), fleet)
    return Plan(found, order, profiles_served(fleet), clouds, nothing)


def clusters(fleet: Fleet) -> list[list[str]]:
    """The hosts of each model that spans Sparks."""
    return [m["cluster"]["hosts"] for h in fleet.hosts.values() if h.has("vllm")
            for m in h.models if m.get("cluster")]


def keep_clusters_together(order: list[list[str]], fleet: Fleet) -> list[list[str]]:
    """A cluster's hosts in one batch (the first of theirs): its model restarts as a
    whole, and a batch that fails rolls its hosts back together."""
    for members in clusters(fleet):
        where = [i for i, batch in enumerate(order) if set(batch) & set(members)]
        if len(where) < 2:
            continue
        first = where[0]
        for i in where[1:]:
            moved = [h for h in order[i] if h in members]
            order[first] += moved
            order[i] = [h for h in order[i] if h not in members]
    return [batch for batch in order if batch]
