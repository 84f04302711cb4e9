"""Idempotent pyinfra operations every service uses.

Each decides at plan time, from the host's snapshot (`host_facts.snapshot()`: one round
trip per host and run), whether anything must change. When nothing must, it says so
and sends nothing; otherwise it hands over to pyinfra's own operation, which checks
again and changes the host. A re-run with nothing changed reports no changes and
`op.will_change` can drive restarts.
"""

from __future__ import annotations

import hashlib
import shlex
from io import StringIO
from pathlib import Path

from pyinfra import host
from pyinfra.api import operation
from pyinfra.operations import apt, files, server
from sparkstack_host.contract import UNIT_DIR, VENV_STAMP

from .host_facts import snapshot


def _sha256_of(src: str | StringIO) -> str:
    if isinstance(src, StringIO):
        return hashlib.sha256(src.getvalue().encode()).hexdigest()
    return hashlib.sha256(Path(src).read_bytes()).hexdigest()


def _owned(entry: dict, user: str | None, group: str | None, mode: str | None) -> bool:
    return ((user is None or entry["user"] == user) and
            (group is None or entry["group"] == group) and
            (mode is None or entry["mode"] == str(mode).lstrip("0")))


@operation()
def put_file(src: str | StringIO, dest: str, user: str | None = None,
             group: str | None = None, mode: str | None = None):
    """Upload a file (a path on the controller or a StringIO) unless the host has it
    with the same contents, owner and mode. It is written beside `dest` and renamed
    over it (atomic: a reader never sees half a file); a unit file is first checked
    with `systemd-analyze verify`, so one systemd would refuse never replaces the old."""
    state = snapshot()
    have = state.file(dest)
    if (state.covers(dest) and have and have["type"] == "f"
            and have.get("sha256") == _sha256_of(src) and _owned(have, user, group, mode)):
        host.noop(f"{dest} is in place")
        return
    folder, name = dest.rsplit("/", 1)
    unit = folder == UNIT_DIR and name.endswith((".service", ".socket", ".timer"))
    # a unit keeps its name (verify needs it) in a folder systemd does not read
    new = f"{folder}/.sparkstack-new/{name}" if unit else f"{folder}/.{name}.sparkstack-new"
    yield from files.put._inner(src=src, dest=new, user=user, group=group, mode=mode)
    if unit:
        # a unit it names that is not installed yet (a socket and its service arrive
        # one after the other) is no fault of this one; anything else is
        yield (f"out=$(systemd-analyze verify {new} 2>&1); rc=$?; "
               f'[ -z "$out" ] || echo "$out" >&2; '
               f"if [ $rc -ne 0 ] && ! echo \"$out\" | grep -v -e 'Unit [^ ]* not found' "
               "-e 'not loaded, socket cannot be started' | grep -q .; then rc=0; fi; "
               f"[ $rc -eq 0 ] || {{ rm -f {new}; "
               f"echo '{name}: systemd refuses this unit; the one in place is kept' >&2; "
               "exit 1; }")
    yield f"mv -f {new} {dest}"


@operation()
def ensure_dir(path: str, user: str | None = None, group: str | None = None,
               mode: str | None = None):
    state = snapshot()
    have = state.file(path)
    if state.covers(path) and have and have["type"] == "d" and _owned(have, user, group,
                                                                       mode):
        host.noop(f"{path} is in place")
        return
    yield from files.directory._inner(path=path, user=user, group=group, mode=mode)


@operation()
def system_user(user: str, home: str):
    """A system user without a login shell, its home the service's state folder."""
    have = snapshot().user(user)
    if have and have["home"] == home and have["shell"] == "/usr/sbin/nologin":
        host.noop(f"user {user} exists")
        return
    yield from server.user._inner(user=user, system=True, home=home,
                                  shell="/usr/sbin/nologin", create_home=False)


@operation()
def deb_packages(packages: list[str]):
    """Install distribution packages (refreshing apt's lists at most daily)."""
    if snapshot().installed(packages):
        host.noop(f"{', '.join(packages)} installed")
        return
    yield from apt.packages._inner(packages=packages, update=True, cache_time=86400)


def _stamped(stamp_file: str, wanted: str) -> bool:
    """Did the last install leave `wanted` in its stamp file (`echo wanted > file`)?"""
    have = snapshot().file(stamp_file)
    return bool(have) and have.get("sha256") == hashlib.sha256(
        f"{wanted}\n".encode()).hexdigest()


def _digest(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()


def venv_digest(requirements: str, pip_conf: str, constraints: str,
                python: str = "python3") -> str:
    """Names a venv by what it was built from: the same inputs, the same venv."""
    return _digest(requirements, pip_conf, constraints, python)[:16]


PROGRESS_SECONDS = 15


def pip_with_progress(venv: str, pip_conf: str, label: str,
                      every: int = PROGRESS_SECONDS) -> str:
    """pip installing a venv's requirements, saying as it goes what it fetches and how
    big (pip's own Collecting/Downloading lines) and, every `every` seconds, how much
    is installed and how fast; pip's exit status is the command's."""
    tag = shlex.quote(f"{label}: ")
    return "bash -c " + shlex.quote(
        # the ticker sleeps a second at a time: a sleep left running when the install
        # ends would hold the output open (and the deploy) for the rest of its time
        f"prev=0; (n=0; while sleep 1; do n=$((n + 1)); [ $((n % {every})) = 0 ] || continue; "
        f"now=$(du -sm {venv} | cut -f1); "
        f"printf '%s%s\\n' {tag} \"$now MB installed, $(( (now - prev) / {every} )) MB/s\"; "
        "prev=$now; done) & ticker=$!; "
        # at the lowest CPU priority: an update builds the new venv beside services that
        # keep serving, and a pip build left at full priority slowed their answers
        f"PIP_CONFIG_FILE={pip_conf} nice -n 19 {venv}/bin/pip install --progress-bar off --upgrade "
        f"--requirement {venv}/sparkstack-requirements.txt 2>&1 | "
        "grep --line-buffered -E '^ *(Collecting|Processing|Downloading|Installing collected|"
        "Successfully installed|ERROR)' | while IFS= read -r line; do "
        f"printf '%s%s\\n' {tag} \"${{line# *}}\"; done; status=${{PIPESTATUS[0]}}; "
        "kill $ticker; exit $status")


def _streamed(state, host, command: str) -> None:
    """Run `command` with its output shown as it comes (a long install says what it
    does), failing the operation when it fails."""
    from pyinfra.api import StringCommand
    from pyinfra.api.exceptions import PyinfraError

    ok, output = host.run_shell_command(StringCommand(command), print_output=True,
                                        _sudo=bool(host.data.get("_sudo")))
    if not ok:
        raise PyinfraError(f"install failed:\n{output.output[-2500:]}")


@operation()
def venv_install(venv: str, requirements: str, pip_conf: str, python: str = "python3",
                 label: str = "install"):
    """Build `venv` (a versioned path, next to the venv in use) with `requirements`
    (text), unless a complete one is there. A venv cannot be moved once built, so it is
    built in place and counts as complete only once its stamp is written: a failed
    build leaves the running venv alone and is started over next time. It shows its
    progress while pip runs (several GB for vLLM and its torch)."""
    from pyinfra.api import FunctionCommand

    stamp_file = f"{venv}/{VENV_STAMP}"
    wanted = venv.rsplit("/", 1)[-1]
    if _stamped(stamp_file, wanted):
        host.noop(f"{venv} is built")
        return
    yield f"rm -rf {venv} && {python} -m venv {venv}"
    yield f"printf '%s' {shlex.quote(requirements)} > {venv}/sparkstack-requirements.txt"
    yield FunctionCommand(_streamed, (pip_with_progress(venv, pip_conf, label),), {})
    yield f"echo {wanted} > {stamp_file}"


@operation()
def venv_switch(service_root: str, digest: str):
    """Point `current` at venvs/DIGEST (atomically) and `previous` at the venv it
    pointed at; keep those two, remove older ones."""
    link = snapshot().file(f"{service_root}/current")
    target = f"venvs/{digest}"
    if link and link.get("target") == target:
        host.noop(f"{service_root}/current is {target}")
        return
    yield (f"cd {service_root} && if [ -L current ]; then "
           f"ln -sfn \"$(readlink current)\" previous; fi && "
           f"ln -sfn {target} current.new && mv -Tf current.new current")
    yield (f"cd {service_root}/venvs && for v in *; do case \"venvs/$v\" in "
           f"\"$(readlink ../current)\"|\"$(readlink ../previous)\") ;; *) rm -rf \"$v\";; "
           "esac; done")


@operation()
def wheel_unpacked(wheel: str, sha256: str, target: str, pip: str):
    """A wheel's own files, without its dependencies, in `target` (for a process that
    imports it from PYTHONPATH); kept with the one before, older ones removed."""
    if _stamped(f"{target}/{VENV_STAMP}", sha256):
        host.noop(f"{target} holds {wheel.rsplit('/', 1)[-1]}")
        return
    yield (f"rm -rf {target}.tmp && {pip} install --quiet --no-deps --no-compile "
           f"--target {target}.tmp {wheel}")
    yield f"echo {sha256} > {target}.tmp/{VENV_STAMP} && rm -rf {target} && " \
          f"mv {target}.tmp {target}"
    yield (f"cd {target.rsplit('/', 1)[0]} && ls -1t | grep -v '\\.tmp$' | tail -n +3 | "
           "xargs -r rm -rf")


@operation()
def unit_running(unit: str, restarted: bool = False, daemon_reload: bool = False):
    """Keep a systemd unit enabled and running; (re)start it only when needed. A start
    that fails prints the unit's last journal lines into the deploy's output."""
    state = snapshot()
    running, enabled = state.running(unit), state.enabled(unit)
    if daemon_reload:
        yield "systemctl daemon-reload"
    if not enabled:
        yield f"systemctl enable {unit}"
    action = "start" if not running else ("restart" if restarted else None)
    if action:
        yield (f"systemctl {action} {unit} || {{ echo 'last log lines of {unit}:'; "
               f"journalctl -u {unit} -n 25 --no-pager -o cat; exit 1; }}")
    elif enabled and not daemon_reload:
        host.noop(f"{unit} is enabled and running")


@operation()
def unit_enabled(unit: str, daemon_reload: bool = False):
    """Keep a systemd unit enabled (it starts at boot), whether it runs left to others
    (a cluster node, which its leader's run starts and stops)."""
    if daemon_reload:
        yield "systemctl daemon-reload"
    if not snapshot().enabled(unit):
        yield f"systemctl enable --quiet {unit}"
    elif not daemon_reload:
        host.noop(f"{unit} is enabled")


@operation()
def unit_stopped(unit: str):
    """Keep a systemd unit stopped and disabled (a swap group member standing by)."""
    state = snapshot()
    if not state.running(unit) and not state.enabled(unit):
        host.noop(f"{unit} is stopped and disabled")
        return
    yield f"systemctl disable --now --quiet {unit}"
