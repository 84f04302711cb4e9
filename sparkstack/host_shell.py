"""One way to run commands on a Spark: over pyinfra's own connector (SSH, or @local),
with the host's sudo settings (`_sudo`), for the playbooks' transactions (the swap, the
update) and for every operator command (health, usage).

`HostShell` runs a command, a command that must succeed, one of the host package's
programs, the readiness gate and a unit's journal. `hold_operation_lock` keeps one
operation at a time on a Spark: see `OperationLock`.
"""

from __future__ import annotations

import fnmatch
import getpass
import json
import os
import shlex
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from io import StringIO

from pyinfra.api import StringCommand
from sparkstack_host.contract import GATE, RUNTIME_DIR, Layout


class CommandFailed(RuntimeError):
    """A command that had to succeed did not; its output is in the message."""


class HostShell:
    """Commands on one Spark, through its pyinfra host (connected on first use)."""

    def __init__(self, host, layout: Layout):
        self.host = host
        self.layout = layout

    @property
    def name(self) -> str:
        return self.host.name

    @property
    def _sudo(self) -> bool:
        return bool(self.host.data.get("_sudo"))

    def _connected(self):
        if not self.host.connected:  # e.g. left out by --limit, yet a route points there
            self.host.connect(reason="to run sparkstack's commands there",
                              raise_exceptions=True)
        return self.host

    def outcome(self, command: str, stream: bool = False, timeout: float | None = None):
        """Run `command` (sh): whether it succeeded, and pyinfra's CommandOutput (its
        `.stdout`, `.stderr` and both in order, `.output`)."""
        return self._connected().run_shell_command(
            StringCommand(command), print_output=stream, _sudo=self._sudo,
            _timeout=timeout)

    def run(self, command: str, stream: bool = False, timeout: float | None = None,
            ) -> tuple[bool, str]:
        """Run `command` (sh); whether it succeeded and its output (stdout and stderr)."""
        ok, output = self.outcome(command, stream, timeout)
        return ok, output.output

    def must(self, command: str, stream: bool = False, timeout: float | None = None) -> str:
        ok, out = self.run(command, stream, timeout)
        if not ok:
            raise CommandFailed(f"{self.name}: `{command}` failed:\n{out[-1500:]}")
        return out

    def program_line(self, name: str, *args: str, config_root: bool = True) -> str:
        """The command line of a host program (console script of the host package);
        those that read the deploy's files are told its config_root."""
        root = ["--config-root", self.layout.config_root] if config_root else []
        return shlex.join([self.layout.host_program(name), *root, *args])

    def program(self, name: str, *args: str, config_root: bool = True,
                stream: bool = False, timeout: float | None = None) -> tuple[bool, str]:
        return self.run(self.program_line(name, *args, config_root=config_root), stream,
                        timeout)

    def program_json(self, name: str, *args: str, timeout: float | None = None):
        """A host program's JSON answer (its standard output, also when it exits with
        a failure, as health does for an unhealthy host); RuntimeError with what it
        said when it answered no JSON."""
        _, output = self.outcome(self.program_line(name, *args), timeout=timeout)
        try:
            if output.stdout.strip():
                return json.loads(output.stdout)
        except ValueError:
            pass
        raise RuntimeError(f"{self.name}: {name}: {(output.output or 'no answer').strip()[-300:]}")

    def gate(self, *args: str) -> str:
        """The readiness gate, its changes applied to a running LiteLLM."""
        return self.must(self.program_line(GATE, *args, "--apply"))

    def journal(self, unit: str, lines: int = 25) -> str:
        return self.run(f"journalctl -u {shlex.quote(unit)} -n {lines} --no-pager -o cat")[1]

    def put_text(self, path: str, text: str) -> None:
        self._connected().put_file(StringIO(text), path, _sudo=self._sudo)

    def start(self, command: str):
        """Start `command` and leave it running: it ends when its input closes, that
        is when this run ends or its connection drops. Returns (stdin, stdout)."""
        from pyinfra.connectors.util import make_unix_command_for_host

        host = self._connected()
        raw = make_unix_command_for_host(host.state, host, StringCommand(command),
                                         _sudo=self._sudo).get_raw_value()
        client = getattr(host.connector, "client", None)
        if client is not None:  # SSH
            stdin, stdout, _ = client.exec_command(raw)
            return stdin, stdout
        proc = subprocess.Popen(["sh", "-c", raw], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, text=True)
        return proc.stdin, proc.stdout


# --- one operation at a time per Spark ---------------------------------------------------

LOCK_FILE = f"{RUNTIME_DIR}/operation.lock"
HOLDER_FILE = f"{RUNTIME_DIR}/operation.holder"
# A run started by a run that holds the lock (the update's deploy of each host) is told
# the holder's token here, and goes on under its lock.
TOKEN_VARIABLE = "SPARKSTACK_OPERATION"
NO_WAIT_VARIABLE = "SPARKSTACK_NO_WAIT"   # refuse at once instead of waiting
POLL_SECONDS = 2.0


class Busy(RuntimeError):
    """Another run holds the Spark and this one was asked not to wait."""


@dataclass
class Holder:
    host: str       # the controller it runs on
    user: str
    command: str
    since: str
    token: str

    def describe(self) -> str:
        return (f"{self.user}@{self.host} since {self.since}: {self.command}")


def this_run() -> Holder:
    """This process as a holder: the same for every host it locks. Its token is the one
    it was started under, else its own (controller and process id)."""
    started = os.stat(f"/proc/{os.getpid()}").st_ctime
    return Holder(host=socket.gethostname(), user=getpass.getuser(),
                  command=shlex.join([os.path.basename(sys.argv[0]), *sys.argv[1:]])[:300],
                  since=time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(started)),
                  token=os.environ.get(TOKEN_VARIABLE)
                  or f"{socket.gethostname()}:{os.getpid()}:{started:.0f}")


def _lock_script(holder: Holder) -> str:
    """flock on the Spark: prints `locked` and then keeps the lock until its input
    closes, or prints `busy` and the holder's description."""
    info = shlex.quote(json.dumps(holder.__dict__))
    return (f"mkdir -p {RUNTIME_DIR} && exec 9>>{LOCK_FILE} && "
            f"if flock -n 9; then printf '%s\\n' {info} > {HOLDER_FILE}; echo locked; "
            f"cat >/dev/null; else echo busy; cat {HOLDER_FILE} 2>/dev/null; echo; fi")


class OperationLock:
    """The Spark's operation lock, held by a command on the Spark for as long as this
    run is connected (flock on a file in /run). A run that dies loses its connection,
    and with it the lock: nothing stale is left behind."""

    def __init__(self, shell: HostShell, holder: Holder):
        self.shell, self.holder = shell, holder
        self._stdin = None

    def try_take(self) -> Holder | None:
        """Take the lock; None once taken, else who holds it."""
        stdin, stdout = self.shell.start(_lock_script(self.holder))
        answer = stdout.readline().strip()
        if answer == "locked":
            self._stdin = stdin  # kept open: closing it releases the lock
            return None
        text = stdout.readline().strip()
        stdin.close()
        try:
            return Holder(**json.loads(text))
        except (ValueError, TypeError):
            return Holder("?", "?", "another sparkstack run", "?", "")

    def take(self, say=print) -> None:
        """Wait for the lock (say who holds it, once), or raise Busy when asked not to
        wait. A run started under this very lock (the same token) goes on."""
        said = False
        while (other := self.try_take()) is not None:
            if other.token and other.token == self.holder.token:
                return  # started by the run that holds it
            if os.environ.get(NO_WAIT_VARIABLE):
                raise Busy(f"{self.shell.name} is busy: {other.describe()}")
            if not said:
                say(f"    [{self.shell.name}] waiting: another run holds this Spark "
                    f"({other.describe()})")
                said = True
            time.sleep(POLL_SECONDS)
        if said:
            say(f"    [{self.shell.name}] the other run is done; this one goes on")

    def release(self) -> None:
        if self._stdin is not None:
            self._stdin.close()
            self._stdin = None


# --- the operator commands' own connection ------------------------------------------------

def matches(host, limit: tuple[str, ...]) -> bool:
    return not limit or any(fnmatch.fnmatch(host.name, pattern) or pattern in host.groups
                            for pattern in limit)


def inventory_hosts(inventory_path: str, limit: tuple[str, ...] = ()) -> list:
    """pyinfra's hosts of an inventory file, those `limit` names (names, globs or
    groups) when given; not connected yet."""
    from pyinfra.api import Config, State
    from pyinfra.context import ctx_state
    from pyinfra_cli.inventory import make_inventory

    state = State()
    with ctx_state.use(state):  # pyinfra's inventory loader expects a state
        inventory = make_inventory(str(inventory_path))
    state.init(inventory, Config())
    return [h for h in inventory if matches(h, limit)]


def shells_of(inventory_path: str, limit: tuple[str, ...] = ()) -> list[HostShell]:
    """A shell for every host of an inventory (limited), each with its own layout."""
    from .settings import load_defaults

    defaults = load_defaults()
    return [HostShell(h, Layout(*(h.data.get(key, defaults[key]) for key in (
        "install_root", "config_root", "state_root"))))
        for h in inventory_hosts(inventory_path, limit)]
