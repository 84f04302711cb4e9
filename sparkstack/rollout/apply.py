"""Carrying out a rolling update's plan: the batches take turns, and each host goes
through `HostUpdate`, in its batch's turn:

1. pre-check: the host's health is green, and every profile it serves has somewhere
   else to go (another Spark or a cloud fallback), else refuse (`--data force=1`);
2. checkpoint (configuration, units, venv links) and back up the databases;
3. drain the host's models out of every LiteLLM of the fleet;
4. deploy the host (`deploy.py --limit HOST`, a run of its own under this run's lock):
   new venvs are built beside the old ones and switched only when complete; services
   restart only where something changed;
5. prove: the host's health, every row green (one completion per profile through its
   own LiteLLM, when it runs one);
6. route the host's models again; the next host.

A host that fails is rolled back by itself (the checkpoint restored, its services
restarted on their previous venvs, the databases restored from the backup only if a
service cannot start on them), the rollout stops and later hosts stay untouched.
Every command goes through the hosts' shells (`HostShell`), so the state machine runs
as well against a fake one.
"""

from __future__ import annotations

import json
import os
import pprint
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import gevent.event
import gevent.subprocess
from pyinfra import logger
from pyinfra.api.exceptions import PyinfraError
from sparkstack_host.contract import BACKUP, CHECKPOINT, HEALTH, backend_id

from ..fleet import Fleet
from ..host_shell import TOKEN_VARIABLE, CommandFailed, HostShell
from ..project import WORKDIR, playbook
from ..services import registry
from ..settings import HostSettings
from .plan import Plan, batch_size_problem, make_plan, would_go_dark


@dataclass
class Rollout:
    """One update run across the fleet: the plan, the batches' turns, the outcome.
    `checkpoint`: what each host's checkpoint of this run is called (one name for the
    run: the hosts a rollback returns together went through the same update)."""

    plan: Plan
    checkpoint: str = "update"
    force: bool = False
    outcome: dict[str, str] = field(default_factory=dict)
    journal: dict[str, str] = field(default_factory=dict)
    stopped_by: str = ""
    inventory: str = ""                   # its copy, for the deploy of each host

    def __post_init__(self):
        self.turns = [gevent.event.Event() for _ in self.plan.order]
        if self.turns:
            self.turns[0].set()
        self.left = [set(b) for b in self.plan.order]
        for host, found in self.plan.changes.items():
            if not found:
                self.outcome[host] = f"skipped ({self.plan.nothing})"

    def batch_of(self, host: str) -> int:
        return next(i for i, b in enumerate(self.plan.order) if host in b)

    def wait_turn(self, host: str) -> None:
        self.turns[self.batch_of(host)].wait()

    def finish(self, host: str, outcome: str) -> None:
        self.outcome[host] = outcome
        i = self.batch_of(host)
        self.left[i].discard(host)
        if not self.left[i] and i + 1 < len(self.turns):
            self.turns[i + 1].set()
        if len(self.outcome) == len(self.plan.changes):
            logger.info(self.table())
            if self.inventory:
                Path(self.inventory).unlink(missing_ok=True)

    def table(self) -> str:
        lines = ["--> Update results:", f"    {'host':14} outcome"]
        for host in self.plan.changes:
            lines.append(f"    {host:14} {self.outcome.get(host, 'untouched')}")
        for host, text in self.journal.items():
            lines.append(f"    {host}, last log lines:\n" + "\n".join(
                f"        {line}" for line in text.splitlines()[-25:]))
        return "\n".join(lines)


class Refused(Exception):
    pass


class Failed(Exception):
    pass


def deploy_host(inventory: str, host: str, token: str, log: Callable[[str], None]) -> None:
    """The inventory's deploy, limited to `host`, as a run of its own (pyinfra cannot
    nest runs) under the update's lock on it (its token); its output goes on to ours."""
    proc = gevent.subprocess.Popen(
        [str(Path(sys.executable).with_name("pyinfra")), "-y", inventory,
         playbook("deploy.py"), "--limit", host], cwd=WORKDIR,
        env={**os.environ, TOKEN_VARIABLE: token}, stdout=gevent.subprocess.PIPE,
        stderr=gevent.subprocess.STDOUT, text=True)
    output = []
    for line in proc.stdout:
        output.append(line)
        log(f"deploy: {line.rstrip()}")
    if proc.wait() != 0:
        raise Failed(f"the deploy of {host} failed:\n" + "".join(output)[-2500:])


@dataclass
class HostUpdate:
    """The update of one host, run at execution time (python.call)."""

    rollout: Rollout
    shells: dict[str, HostShell]          # this host's and every LiteLLM host's
    host: str
    units: list[str]                      # this host's sparkstack units
    backends: dict[str, list[str]]        # host:port -> LiteLLM hosts routing to it
    dark: list[str]
    databases: list[str]
    backup_keep: int
    deploy: Callable[[str, Callable[[str], None]], None]   # (host, log)
    rollback_only: bool = False

    @property
    def shell(self) -> HostShell:
        return self.shells[self.host]

    def _log(self, message: str) -> None:
        logger.info(f"    [{self.host}] {message}")

    def _must(self, name: str, command: str) -> str:
        try:
            return self.shells[name].must(command)
        except CommandFailed as e:
            raise Failed(str(e))

    def _program(self, name: str, *args: str) -> str:
        return self._must(self.host, self.shell.program_line(name, *args))

    def _health(self) -> list[dict]:
        ok, out = self.shell.program(HEALTH, "--json")
        try:
            return json.loads(out)
        except ValueError:
            return [{"check": "health", "ok": False, "detail": out[-300:]}]

    def _routes(self, action: str) -> None:
        for backend, hosts in self.backends.items():
            for name in hosts:
                try:
                    self.shells[name].gate(f"--{action}", backend)
                except CommandFailed as e:
                    raise Failed(str(e))

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
        name = self.rollout.checkpoint
        self._log(self._program(CHECKPOINT, "save", name))
        if self.databases:
            self._log(self._program(BACKUP, "--keep", str(self.backup_keep)))
        self._log(f"drain {', '.join(self.backends) or 'no model'} out of every LiteLLM")
        self._routes("drain")
        self._log("deploy the inventory's versions (new venvs beside the old ones)")
        self.deploy(self.host, self._log)
        sick = [f"{r['check']}: {r['detail']}" for r in self._health() if not r["ok"]]
        if sick:
            raise Failed("health after the update: " + "; ".join(sick))
        self._program(CHECKPOINT, "commit", name)  # what a rollback returns to before
        self._routes("undrain")
        self._log("updated, healthy, routed again")
        return "updated"

    def _restart_all(self) -> list[str]:
        """Restart the host's enabled sparkstack units; the ones that fail to start."""
        failed = []
        for unit in self.units:
            enabled, _ = self.shell.run(f"systemctl is-enabled --quiet {unit}")
            if enabled and not self.shell.run(f"systemctl restart {unit}")[0]:
                failed.append(unit)
        return failed

    def _recover(self) -> str:
        """Roll the host back by itself: the checkpoint, its services restarted, the
        databases restored only if a service cannot start on them."""
        self._log("rolling back to the checkpoint taken before the update")
        try:
            self._program(CHECKPOINT, "restore", self.rollout.checkpoint)
            failed = self._restart_all()
            if failed and self.databases:
                self._log(f"{', '.join(failed)} cannot start: restoring the databases")
                for db in self.databases:
                    self.shell.program(BACKUP, "--restore", db)
                failed = self._restart_all()
            if failed:
                return f"rollback incomplete: {', '.join(failed)} do not start"
            self._routes("undrain")
        except Failed as e:
            return f"rollback failed: {e}"
        return "rolled back"

    def _rollback(self) -> str:
        self._log("return to the versions before the last update that took effect "
                  "(on request)")
        self._routes("drain")
        self._program(CHECKPOINT, "rollback")
        failed = self._restart_all()
        if failed:
            raise Failed(f"{', '.join(failed)} do not start on the previous versions")
        self._routes("undrain")
        return "rolled back (on request)"


# --- wiring it into the update playbook -----------------------------------------------------

def write_inventory_copy(inventory, run_arguments: frozenset[str]) -> str:
    """The inventory this run was given (every host with all its data, not the run's
    own arguments), for the deploy each host's update runs: it plans the whole fleet
    but changes only that host."""
    hosts = [(h.name, {k: v for k, v in h.data.dict().items() if k not in run_arguments})
             for h in inventory]
    fd, path = tempfile.mkstemp(prefix="sparkstack-update-", suffix=".py")
    with open(fd, "w") as f:
        f.write("# The inventory of a `sparkstack update` run (written by the run).\n"
                f"sparks = {pprint.pformat(hosts)}\n")
    return path


def plan_once(batch: str, force: bool, rollback: bool) -> Rollout:
    """The run's plan, made when its first host is planned (before any host changes):
    every host's snapshot read in parallel, what differs, the batches in the
    inventory's order."""
    from pyinfra import state

    from ..context import current_run
    from ..host_facts import prefetch, snapshot_of
    run = current_run(state)
    with run.guard:  # the hosts are planned in parallel greenlets
        if run.rollout is None:
            if problem := batch_size_problem(batch):
                raise PyinfraError(problem)
            active = set(state.inventory.get_active_hosts())
            hosts = [h for h in state.inventory if h in active]
            prefetch(hosts)
            plan = make_plan(run.fleet, {h.name: snapshot_of(h) for h in hosts}, batch,
                             rollback)
            run.rollout = Rollout(plan, time.strftime("update-%Y%m%d-%H%M%S"), force,
                                  inventory=write_inventory_copy(state.inventory,
                                                                 run.run_arguments))
            logger.info(plan.describe())
    return run.rollout


def for_host(rollout: Rollout, s: HostSettings, fleet: Fleet,
             rollback_only: bool = False) -> HostUpdate:
    from pyinfra import state

    from ..context import current_run
    from ..host_shell import this_run
    run = current_run(state)
    backends = {backend_id(s.name, m["port"]): [h.name for h in
                                                fleet.litellm_hosts_routing_to(s, m)]
                for m in s.models}
    names = {s.name, *(h for hosts in backends.values() for h in hosts)}
    shells = {name: run.shell(state.inventory.get_host(name)) for name in names}
    token = this_run().token
    services = registry.on(s)
    return HostUpdate(
        rollout=rollout, shells=shells, host=s.name,
        units=[unit for svc in services for unit in svc.units(s)], backends=backends,
        dark=would_go_dark(s.name, fleet),
        databases=[svc.database for svc in services if svc.database and s.has("postgres")],
        backup_keep=s["backup_keep"], rollback_only=rollback_only,
        deploy=lambda host, log: deploy_host(rollout.inventory, host, token, log))

