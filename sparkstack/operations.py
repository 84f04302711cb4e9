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
    with the same contents, owner and mode."""
    state = snapshot()
    have = state.file(dest)
    if (state.covers(dest) and have and have["type"] == "f"
            and have.get("sha256") == _sha256_of(src) and _owned(have, user, group, mode)):
        host.noop(f"{dest} is in place")
        return
    yield from files.put._inner(src=src, dest=dest, user=user, group=group, mode=mode)


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


@operation()
def venv_install(venv: str, requirements: str, pip_conf: str, constraints: str,
                 python: str = "python3"):
    """Create `venv` and pip-install `requirements` (text) into it, only when the
    requirements or pip settings differ from the last successful install."""
    stamp_file = f"{venv}/.sparkstack-installed"
    wanted = _digest(requirements, pip_conf, constraints, python)
    if _stamped(stamp_file, wanted):
        host.noop(f"{venv} already has {requirements.strip()}")
        return
    req_file = f"{venv}.requirements.txt"
    yield f"test -x {venv}/bin/python || {python} -m venv {venv}"
    yield f"printf '%s' {shlex.quote(requirements)} > {req_file}"
    yield (f"PIP_CONFIG_FILE={pip_conf} {venv}/bin/pip install --quiet --upgrade "
           f"--requirement {req_file}")
    yield f"echo {wanted} > {stamp_file}"


@operation()
def wheel_install(venv: str, wheel: str, sha256: str, pip_conf: str, extras: str = "",
                  python: str = "python3"):
    """Install a wheel (re-installed whenever its sha256 changes, whatever its version)
    into `venv`, with its `extras`' dependencies when given."""
    stamp_file = f"{venv}/.sparkstack-wheel-{wheel.rsplit('/', 1)[-1].split('-')[0]}"
    if _stamped(stamp_file, sha256):
        host.noop(f"{venv} already has {wheel.rsplit('/', 1)[-1]} ({sha256[:12]})")
        return
    pip = f"PIP_CONFIG_FILE={pip_conf} {venv}/bin/pip install --quiet"
    yield f"test -x {venv}/bin/python || {python} -m venv {venv}"
    yield f"{pip} --no-deps --force-reinstall {wheel}"
    if extras:
        yield f"{pip} {shlex.quote(f'{wheel}[{extras}]')}"
    yield f"echo {sha256} > {stamp_file}"


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
def unit_stopped(unit: str):
    """Keep a systemd unit stopped and disabled (a swap group member standing by)."""
    state = snapshot()
    if not state.running(unit) and not state.enabled(unit):
        host.noop(f"{unit} is stopped and disabled")
        return
    yield f"systemctl disable --now --quiet {unit}"
