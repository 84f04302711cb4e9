"""Rolling updates: the inventory applied to one batch of Sparks at a time.

Planned once per run, before any host is changed: which hosts differ from the
inventory's versions (each service's venv is named by what it is built from, so a
host's `current` links say what it runs), in which batch each goes, and who serves each
profile meanwhile. Then, per host, in its batch's turn (`HostUpdate.run`):

1. pre-check: the host's health is green, and every profile it serves has somewhere
   else to go (another Spark or a cloud fallback), else refuse (`--data force=1`);
2. checkpoint (configuration, units, venv links) and back up the databases;
3. drain the host's models out of every LiteLLM of the fleet;
4. deploy the host (`deploy.py --limit HOST`): new venvs are built beside the old ones
   and switched only when complete; services restart only where something changed;
5. prove: the host's health, every row green (one completion per profile through its
   own LiteLLM, when it runs one);
6. route the host's models again; the next host.

A host that fails is rolled back by itself (the checkpoint restored, its services
restarted on their previous venvs, the databases restored from the backup only if a
service cannot start on them), the rollout stops and later hosts stay untouched.
"""

from __future__ import annotations

import json
import math
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path

import gevent
import gevent.event
import gevent.lock
import gevent.subprocess
from pyinfra import logger
from pyinfra.api import StringCommand
from pyinfra.api.exceptions import PyinfraError
from sparkstack_host.contract import (
    BACKUP,
    CHECKPOINT,
    GATE,
    HEALTH,
    LITELLM_UNIT,
    OPENWEBUI_UNIT,
    Layout,
    backend_id,
    vllm_unit,
)

from .fleet import Fleet
from .host_facts import Snapshot
from .project import WORKDIR, playbook
from .settings import HostSettings

CHECKPOINT_NAME = "before-update"


def describe_requirements(text: str | None) -> str:
    lines = [line for line in (text or "").splitlines()
             if line.strip() and not line.startswith("#")]
    return " ".join(lines) or "nothing"


def changes(s: HostSettings, state: Snapshot) -> list[str]:
    """What an update changes on this host: each venv whose inputs differ."""
    from .services import base
    found = []
    for service, label, requirements in base.venvs(s):
        digest = base.venv_id(s, requirements)
        link = state.file(f"{s.layout.service_root(service)}/current") or {}
        if link.get("target") != f"venvs/{digest}":
            before = state.content(f"{s.layout.venv(service)}/sparkstack-requirements.txt")
            found.append(f"{label}: {describe_requirements(before)} -> "
                         f"{describe_requirements(requirements)}")
    return found


def batches(hosts: list[str], size: str) -> list[list[str]]:
    """Split `hosts` into batches of `size` hosts, or `size`% of them (at least one)."""
    if size.endswith("%"):
        n = max(1, math.floor(len(hosts) * float(size[:-1]) / 100))
    else:
        n = max(1, int(size))
    return [hosts[i:i + n] for i in range(0, len(hosts), n)]


def profiles_served(s: HostSettings, fleet: Fleet) -> dict[str, list[tuple[str, int]]]:
    """Profile -> (host, port) of every local backend any LiteLLM routes it to."""
    served: dict[str, list[tuple[str, int]]] = {}
    for h in fleet.hosts.values():
        if not h.has("litellm"):
            continue
        for name, profile in h["profiles"].items():
            for local in profile.get("local", []):
                for r in fleet.replicas_of(local, h):
                    served.setdefault(name, []).append((r.host, r.port))
    return served


def would_go_dark(host: str, fleet: Fleet) -> list[str]:
    """Profiles with no other Spark and no cloud fallback while `host` is drained."""
    dark = []
    for h in fleet.hosts.values():
        if not h.has("litellm"):
            continue
        for name, profile in h["profiles"].items():
            backends = [r.host for local in profile.get("local", [])
                        for r in fleet.replicas_of(local, h)]
            cloud = bool(profile.get("cloud")) and bool(h["cloud_api_key"] or _env_key())
            if backends and not cloud and not set(backends) - {host}:
                dark.append(name)
    return sorted(set(dark))


def _env_key() -> str:
    import os
    return os.environ.get("OPENROUTER_API_KEY", "")


@dataclass
class Rollout:
    """One update run across the fleet: the plan, the batches' turns, the outcome."""

    fleet: Fleet
    plan: dict[str, list[str]]            # host -> changes (empty: up to date)
    order: list[list[str]]
    force: bool = False
    outcome: dict[str, str] = field(default_factory=dict)
    journal: dict[str, str] = field(default_factory=dict)
    stopped_by: str = ""
    inventory: str = ""                   # its copy, for the deploy of each host

    def __post_init__(self):
        self.turns = [gevent.event.Event() for _ in self.order]
        if self.turns:
            self.turns[0].set()
        self.left = [set(b) for b in self.order]
        for host, found in self.plan.items():
            if not found:
                self.outcome[host] = "skipped (up to date)"

    def batch_of(self, host: str) -> int:
        return next(i for i, b in enumerate(self.order) if host in b)

    def describe(self) -> str:
        served = {}
        for h in self.fleet.hosts.values():
            for name, backends in profiles_served(h, self.fleet).items():
                served.setdefault(name, set()).update(backends)
        lines = ["update plan:"]
        for i, batch in enumerate(self.order, 1):
            lines.append(f"  batch {i}: {', '.join(batch)}")
            for host in batch:
                for change in self.plan[host]:
                    lines.append(f"    {host}: {change}")
            for name in sorted(served):
                others = sorted({f"{h}:{p}" for h, p in served[name] if h not in batch})
                clouds = [h.name for h in self.fleet.hosts.values() if h.has("litellm")
                          and h["profiles"].get(name, {}).get("cloud")]
                meanwhile = ", ".join(others) or ("its cloud model" if clouds else "NOBODY")
                lines.append(f"    meanwhile {name} is served by {meanwhile}")
        for host, found in self.plan.items():
            if not found:
                lines.append(f"  {host}: up to date, skipped")
        return "\n".join(lines)

    def wait_turn(self, host: str) -> None:
        self.turns[self.batch_of(host)].wait()

    def finish(self, host: str, outcome: str) -> None:
        self.outcome[host] = outcome
        i = self.batch_of(host)
        self.left[i].discard(host)
        if not self.left[i] and i + 1 < len(self.turns):
            self.turns[i + 1].set()
        if len(self.outcome) == len(self.plan):
            logger.info(self.table())
            if self.inventory:
                Path(self.inventory).unlink(missing_ok=True)

    def table(self) -> str:
        lines = ["--> Update results:", f"    {'host':14} outcome"]
        for host in self.plan:
            lines.append(f"    {host:14} {self.outcome.get(host, 'untouched')}")
        for host, text in self.journal.items():
            lines.append(f"    {host}, last log lines:\n" + "\n".join(
                f"        {line}" for line in text.splitlines()[-25:]))
        return "\n".join(lines)


@dataclass
class HostUpdate:
    """The update of one host, run at execution time (python.call)."""

    rollout: Rollout
    host: str
    layout: Layout
    inventory: str
    units: list[str]                      # this host's sparkstack units
    backends: dict[str, list[str]]        # host:port -> LiteLLM hosts routing to it
    layouts: dict[str, Layout]
    dark: list[str]
    has_postgres: bool
    backup_keep: int
    rollback_only: bool = False

    # --- commands on this and other hosts ---------------------------------------------
    def _log(self, message: str) -> None:
        logger.info(f"    [{self.host}] {message}")

    @staticmethod
    def _host(name: str):
        from pyinfra import state
        h = state.inventory.get_host(name)
        if not h.connected:
            h.connect(reason="to drain or route a model it routes to",
                      raise_exceptions=True)
        return h

    def _run(self, name: str, command: str) -> tuple[bool, str]:
        h = self._host(name)
        ok, output = h.run_shell_command(StringCommand(command),
                                         _sudo=bool(h.data.get("_sudo")))
        return ok, "\n".join(line.line for line in output)

    def _must(self, name: str, command: str) -> str:
        ok, out = self._run(name, command)
        if not ok:
            raise Failed(f"`{command}` failed on {name}:\n{out[-1500:]}")
        return out

    def _program(self, name: str, *args: str) -> str:
        layout = self.layouts.get(name, self.layout)
        return shlex.join([layout.host_program(args[0]), "--config-root",
                           layout.config_root, *args[1:]])

    def _health(self) -> list[dict]:
        ok, out = self._run(self.host, self._program(self.host, HEALTH, "--json"))
        try:
            return json.loads(out)
        except ValueError:
            return [{"check": "health", "ok": False, "detail": out[-300:]}]

    def _routes(self, action: str) -> None:
        for backend, hosts in self.backends.items():
            for name in hosts:
                self._must(name, self._program(name, GATE, f"--{action}", backend,
                                               "--apply"))

    # --- the steps ------------------------------------------------------------------------
    def run(self) -> None:
        rollout = self.rollout
        rollout.wait_turn(self.host)
        if rollout.stopped_by:
            rollout.finish(self.host, "untouched")
            raise PyinfraError(f"{self.host}: not updated, the rollout stopped at "
                               f"{rollout.stopped_by}")
        try:
            outcome = self._rollback() if self.rollback_only else self._update()
        except Refused as e:
            rollout.stopped_by = rollout.stopped_by or self.host
            rollout.finish(self.host, f"refused: {e}")
            raise PyinfraError(f"{self.host}: update refused, nothing changed: {e}")
        except Failed as e:
            rollout.stopped_by = rollout.stopped_by or self.host
            rollout.journal[self.host] = str(e)
            outcome = self._recover()
            rollout.finish(self.host, outcome)
            raise PyinfraError(f"{self.host}: update failed, {outcome}: {e}")
        rollout.finish(self.host, outcome)

    def _update(self) -> str:
        self._log("pre-check: its health, and where its profiles go meanwhile")
        sick = [f"{r['check']}: {r['detail']}" for r in self._health() if not r["ok"]]
        if sick and not self.rollout.force:
            raise Refused("the host is not healthy before the update: " + "; ".join(sick))
        if self.dark and not self.rollout.force:
            raise Refused(f"profile(s) {', '.join(self.dark)} would have no other Spark "
                          "and no cloud fallback while it updates (--force accepts that)")
        self._log(self._must(self.host, self._program(self.host, CHECKPOINT, "save",
                                                      CHECKPOINT_NAME)))
        if self.has_postgres:
            self._log(self._must(self.host, self._program(
                self.host, BACKUP, "--keep", str(self.backup_keep))))
        self._log(f"drain {', '.join(self.backends) or 'no model'} out of every LiteLLM")
        self._routes("drain")
        self._deploy()
        sick = [f"{r['check']}: {r['detail']}" for r in self._health() if not r["ok"]]
        if sick:
            raise Failed("health after the update: " + "; ".join(sick))
        self._routes("undrain")
        self._log("updated, healthy, routed again")
        return "updated"

    def _deploy(self) -> None:
        self._log("deploy the inventory's versions (new venvs beside the old ones)")
        proc = gevent.subprocess.run(
            [str(Path(sys.executable).with_name("pyinfra")), "-y", self.inventory,
             playbook("deploy.py"), "--limit", self.host], cwd=WORKDIR, capture_output=True,
            text=True)
        for line in proc.stdout.splitlines() + proc.stderr.splitlines():
            if line.startswith("    [") or "Grand total" in line:
                self._log(f"deploy: {line.strip()}")
        if proc.returncode != 0:
            raise Failed(f"the deploy of {self.host} failed:\n"
                         + (proc.stdout + proc.stderr)[-2500:])

    def _restart_all(self) -> list[str]:
        """Restart the host's enabled sparkstack units; the ones that fail to start."""
        failed = []
        for unit in self.units:
            enabled, _ = self._run(self.host, f"systemctl is-enabled --quiet {unit}")
            if enabled and not self._run(self.host, f"systemctl restart {unit}")[0]:
                failed.append(unit)
        return failed

    def _recover(self) -> str:
        """Roll the host back by itself: the checkpoint, its services restarted, the
        databases restored only if a service cannot start on them."""
        self._log("rolling back to the checkpoint taken before the update")
        try:
            self._must(self.host, self._program(self.host, CHECKPOINT, "restore",
                                                CHECKPOINT_NAME))
            failed = self._restart_all()
            if failed and self.has_postgres:
                self._log(f"{', '.join(failed)} cannot start: restoring the databases")
                for db in ("litellm", "openwebui"):
                    self._run(self.host, self._program(self.host, BACKUP, "--restore", db))
                failed = self._restart_all()
            if failed:
                return f"rollback incomplete: {', '.join(failed)} do not start"
            self._routes("undrain")
        except Failed as e:
            return f"rollback failed: {e}"
        return "rolled back"

    def _rollback(self) -> str:
        self._log("return to the versions before the last update (on request)")
        self._routes("drain")
        self._must(self.host, self._program(self.host, CHECKPOINT, "restore",
                                            CHECKPOINT_NAME))
        failed = self._restart_all()
        if failed:
            raise Failed(f"{', '.join(failed)} do not start on the previous versions")
        self._routes("undrain")
        return "rolled back (on request)"


class Refused(Exception):
    pass


class Failed(Exception):
    pass


def host_units(s: HostSettings) -> list[str]:
    units = []
    if s.has("litellm"):
        units.append(LITELLM_UNIT)
    if s.has("openwebui"):
        units.append(OPENWEBUI_UNIT)
    return units + [vllm_unit(m["name"]) for m in s.models]


_planned: Rollout | None = None
_planning = gevent.lock.Semaphore()  # the hosts are planned in parallel greenlets


def plan_once(fleet: Fleet, batch: str, force: bool, rollback: bool) -> Rollout:
    """The run's plan, made when the first host is planned (before any host changes):
    every host's snapshot read in parallel, what differs, the batches in the
    inventory's order."""
    global _planned
    with _planning:
        if _planned is None:
            _planned = _plan(fleet, batch, force, rollback)
            logger.info(_planned.describe())
    return _planned


def _plan(fleet: Fleet, batch: str, force: bool, rollback: bool) -> Rollout:
    from pyinfra import state

    from .host_facts import snapshot_of
    if not (batch.rstrip("%").isdigit() and int(batch.rstrip("%")) > 0):
        raise PyinfraError(f"update: batch = {batch!r}: give a number of hosts (e.g. 2) or "
                           "a share of them (e.g. 25%)")
    active = set(state.inventory.get_active_hosts())
    hosts = [h for h in state.inventory if h in active]
    gevent.joinall([gevent.spawn(snapshot_of, h) for h in hosts], raise_error=True)
    found = {h.name: (["back to the versions before the last update"] if rollback
                      else changes(fleet[h.name], snapshot_of(h))) for h in hosts}
    rollout = Rollout(fleet, found, batches([h for h in found if found[h]], batch), force)
    rollout.inventory = write_inventory_copy(state.inventory)
    return rollout


def write_inventory_copy(inventory) -> str:
    """The inventory this run was given (every host with all its data), for the deploy
    each host's update runs: it plans the whole fleet but changes only that host."""
    import pprint
    import tempfile

    from .context import run_arguments
    hosts = [(h.name, {k: v for k, v in h.data.dict().items() if k not in run_arguments()})
             for h in inventory]
    fd, path = tempfile.mkstemp(prefix="sparkstack-update-", suffix=".py")
    with open(fd, "w") as f:
        f.write("# The inventory of a `sparkstack update` run (written by the run).\n"
                f"sparks = {pprint.pformat(hosts)}\n")
    return path


def for_host(plan: Rollout, s: HostSettings, fleet: Fleet,
             rollback_only: bool = False) -> HostUpdate:
    backends = {backend_id(s.name, m["port"]): [h.name for h in fleet.litellm_hosts_routing_to(s, m)]
                for m in s.models}
    return HostUpdate(
        rollout=plan, host=s.name, layout=s.layout, inventory=plan.inventory,
        units=host_units(s), backends=backends,
        layouts={h.name: h.layout for h in fleet.hosts.values()},
        dark=would_go_dark(s.name, fleet), has_postgres=s.has("postgres"),
        backup_keep=s["backup_keep"], rollback_only=rollback_only)
