"""A swap: the vLLM units that start on a host replace units that run there now.

The deploy plans it (which units stop, start or restart, whether the new models fit
while the old ones still run) before any host is changed, writes the new unit files,
then runs `Swap.run` once per host, one host at a time across the fleet, so a profile
served by several Sparks stays local on the others:

1. download the new weights while the old models serve (a failed download changes
   nothing: the unit files written for the swap are put back);
2. make-before-break when the new models fit beside the old ones: start the new units
   (each returns once its model answers), route them on every LiteLLM of the fleet,
   then drain the old ones out of every LiteLLM (requests in flight finish) and stop
   them; otherwise break-before-make: drain and stop the old units, drop the page cache
   if the fit needs it, start the new ones and route them;
3. roll back when a new model does not become ready: stop it, put every file the swap
   changed back (and vLLM's venv link, when the run switched to a new vLLM), start the
   old units again and route them, and fail with the unit's journal. The host is then
   as before the run.
"""

from __future__ import annotations

import shlex
from contextlib import nullcontext
from dataclasses import dataclass, field

import gevent.lock
from pyinfra import logger
from pyinfra.api.exceptions import PyinfraError

from ...host_shell import HostShell
from .fit import MAKE_BEFORE_BREAK

# One swap at a time in the whole fleet: the other Sparks keep serving meanwhile.
_one_at_a_time = gevent.lock.Semaphore()


@dataclass
class Unit:
    unit: str
    backend: str                     # host:port, as LiteLLM names the route
    litellm_hosts: list[str]         # hosts whose LiteLLM routes to it (this one too)
    # a model across Sparks: the other hosts' parts (host, unit), started before this
    # unit (it answers once all have joined) and stopped after it
    nodes: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class Swap:
    host: str
    shells: dict[str, HostShell]     # this host's and its models' LiteLLM hosts'
    mode: str
    stop: list[Unit]                 # running units that stop for good (or stand by)
    start: list[Unit]                # units that start (or restart, when also in stop)
    # repo, revision, command[, host: another Spark, for a cluster's node]
    downloads: list[tuple] = field(default_factory=list)
    drop_caches: bool = False
    previous: dict[str, str | None] = field(default_factory=dict)    # path: text or None
    links: dict[str, str] = field(default_factory=dict)   # venv link: where it pointed
    record: dict[str, str] = field(default_factory=dict)   # path: text, once it worked
    disable: list[str] = field(default_factory=list)       # units that stand by or go
    remove: list[str] = field(default_factory=list)        # their files, for those that go
    log_lines: list[str] = field(default_factory=list)

    def describe(self) -> str:
        start = ", ".join(u.unit for u in self.start) or "nothing"
        if not self.stop:  # a first start, a model added, a unit removed
            gone = f"; remove {', '.join(self.disable)}" if self.disable else ""
            return f"start {start}{gone}"
        stop = ", ".join(u.unit for u in self.stop)
        return f"swap ({self.mode}): stop {stop}; start {start}"

    # --- commands on this and other hosts ---------------------------------------------------
    def _log(self, message: str) -> None:
        self.log_lines.append(message)
        logger.info(f"    [{self.host}] {message}")

    @property
    def _shell(self) -> HostShell:
        return self.shells[self.host]

    def _others(self, unit: Unit) -> list[str]:
        """LiteLLM hosts other than this one (its own is drained by the unit's hooks)."""
        return [h for h in unit.litellm_hosts if h != self.host]

    # --- the steps -------------------------------------------------------------------------
    def _download(self) -> None:
        for repo, revision, command, *where in self.downloads:
            host = where[0] if where else self.host   # a cluster's node: onto its host
            self._log(f"download {repo}@{revision or 'main'}"
                      f"{'' if host == self.host else ' onto ' + host} while the old model "
                      "serves")
            self.shells[host].must(command, stream=True)

    def _drain_and_stop(self, unit: Unit) -> None:
        for other in self._others(unit):
            self._log(f"drain {unit.backend} out of {other}'s LiteLLM")
            self.shells[other].gate("--drain", unit.backend)
        self._log(f"stop {unit.unit} (its own LiteLLM drains it first)")
        self._shell.must(f"systemctl stop {unit.unit}")
        self._nodes(unit, "stop")

    def _nodes(self, unit: Unit, action: str) -> None:
        for host, node in unit.nodes:
            self._log(f"{action} {node} on {host} (a part of {unit.unit}'s model)")
            if action == "start":
                self.shells[host].must(f"systemctl daemon-reload && systemctl start {node}")
            else:
                self.shells[host].run(f"systemctl {action} {node}")

    def _start_and_route(self, unit: Unit) -> None:
        self._nodes(unit, "start")
        self._log(f"start {unit.unit}; returns once the model answers")
        ok, _ = self._shell.run(f"systemctl start {unit.unit}")
        if not ok:
            raise NotReady(unit.unit, self._shell.journal(unit.unit))
        if not self.stop:  # a model that is new here: the run's last step routes it
            return
        for other in self._others(unit):
            self._log(f"route {unit.backend} on {other}'s LiteLLM")
            self.shells[other].gate("--undrain", unit.backend)

    def _restore(self, started: list[Unit], stopped: list[Unit]) -> None:
        shell = self._shell
        for unit in started:
            shell.run(f"systemctl stop {unit.unit}; systemctl reset-failed {unit.unit}")
            self._nodes(unit, "stop")
        for path, text in self.previous.items():
            if text is None:
                shell.run(f"rm -f {shlex.quote(path)}")
            else:
                shell.put_text(path, text)
        for path, target in self.links.items():
            shell.must(f"ln -sfn {shlex.quote(target)} {shlex.quote(path)}.back "
                       f"&& mv -Tf {shlex.quote(path)}.back {shlex.quote(path)}")
        shell.must("systemctl daemon-reload")
        for unit in stopped:
            self._log(f"roll back: start {unit.unit} again")
            self._nodes(unit, "start")
            shell.run(f"systemctl start {unit.unit}")
            for other in self._others(unit):
                self.shells[other].gate("--undrain", unit.backend)
        # this host's LiteLLM takes its previous routes back
        if any(self.host in u.litellm_hosts for u in self.stop + self.start):
            shell.gate()

    def run(self) -> None:
        """Runs at execution time (python.call); raises when the swap was rolled back.
        One that stops nothing (a first start, a model added) has nothing to go back to:
        a unit that does not become ready is left trying, and the run fails with its
        log; nor need the other Sparks wait for it."""
        with _one_at_a_time if self.stop else nullcontext():
            self._log(self.describe())
            try:
                self._download()
            except RuntimeError as e:
                self._restore([], [])
                raise PyinfraError(f"{self.host}: download failed, nothing changed: {e}")
            self._shell.must("systemctl daemon-reload")
            stopped: list[Unit] = []
            started: list[Unit] = []
            try:
                if self.mode == MAKE_BEFORE_BREAK:
                    for unit in self.start:
                        started.append(unit)
                        self._start_and_route(unit)
                    for unit in self.stop:
                        self._drain_and_stop(unit)
                        stopped.append(unit)
                else:
                    for unit in self.stop:
                        self._drain_and_stop(unit)
                        stopped.append(unit)
                    if self.drop_caches:
                        self._drop_caches()
                    for unit in self.start:
                        started.append(unit)
                        self._start_and_route(unit)
            except NotReady as e:
                if not self.stop:
                    self._finish()
                    self._log(f"last log lines of {e.unit}:")
                    for line in e.journal.splitlines():
                        self._log(f"    {line}")
                    raise PyinfraError(f"{self.host}: {e.unit} did not become ready; it keeps "
                                       "trying, and its profiles stay on their cloud model")
                self._log(f"{e.unit} did not become ready: rolling back")
                self._restore(started, stopped)
                raise PyinfraError(f"{self.host}: swap rolled back, {e.unit} did not become "
                                   f"ready; the host runs what it ran before. Last log lines "
                                   f"of {e.unit}:\n{e.journal}")
            self._finish()
            self._log("swap done" if self.stop else "started")

    def _drop_caches(self) -> None:
        """Free the page cache, which a Spark's GPU cannot use until it is dropped. Where
        the kernel's settings are read-only (a container, such as a simulated Spark) it
        cannot be done: said so, and the start goes on (the fit had room after it)."""
        self._log("drop the page cache so the new model fits")
        ok, out = self._shell.run("sync; echo 3 > /proc/sys/vm/drop_caches")
        if not ok:
            self._log("could not drop the page cache (/proc/sys/vm/drop_caches: "
                      f"{out.strip().splitlines()[-1] if out.strip() else 'refused'}; "
                      "read-only in a container); starting anyway")

    def _finish(self) -> None:
        """What the run leaves in place: the recorded choices, the units enabled that
        run and disabled that stand by, the files of models gone from the inventory."""
        for path, text in self.record.items():
            self._shell.put_text(path, text)
        for unit in self.start:
            self._shell.must(f"systemctl enable --quiet {unit.unit}")
        for unit in self.disable:
            self._shell.must(f"systemctl disable --now --quiet {unit}")
        if self.remove:
            self._shell.must(f"rm -f {shlex.join(self.remove)} && systemctl daemon-reload")


class NotReady(Exception):
    def __init__(self, unit: str, journal: str):
        super().__init__(unit)
        self.unit, self.journal = unit, journal
