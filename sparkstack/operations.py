"""Idempotent pyinfra operations sparkstack needs beyond pyinfra's own.

Each decides at plan time from a fact whether anything must change, so a re-run with
nothing changed reports no changes and `op.will_change` can drive restarts.
"""

from __future__ import annotations

import hashlib
import shlex

from pyinfra import host
from pyinfra.api import FactBase, operation
from pyinfra.facts.files import FileContents, Sha256File
from pyinfra.facts.systemd import SystemdEnabled, SystemdStatus


def _stamp(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()


@operation()
def venv_install(venv: str, requirements: str, pip_conf: str, constraints: str,
                 python: str = "python3"):
    """Create `venv` and pip-install `requirements` (text) into it, only when the
    requirements or pip settings differ from the last successful install."""
    stamp_file = f"{venv}/.sparkstack-installed"
    wanted = _stamp(requirements, pip_conf, constraints, python)
    current = host.get_fact(FileContents, path=stamp_file)
    if current and current[0].strip() == wanted:
        host.noop(f"{venv} already has {requirements.strip()}")
        return
    req_file = f"{venv}.requirements.txt"
    yield f"test -x {venv}/bin/python || {python} -m venv {venv}"
    yield f"printf '%s' {shlex.quote(requirements)} > {req_file}"
    yield (f"PIP_CONFIG_FILE={pip_conf} {venv}/bin/pip install --quiet --upgrade "
           f"--requirement {req_file}")
    yield f"echo {wanted} > {stamp_file}"


class PostgresObjects(FactBase):
    """Role and database names in the local PostgreSQL (empty when not installed)."""

    def command(self) -> str:
        return ("if command -v psql >/dev/null && id postgres >/dev/null 2>&1 && "
                "pg_isready -q 2>/dev/null; then cd / && "
                "sudo -u postgres psql -tAqc \"SELECT 'role:' || rolname FROM pg_roles "
                "UNION ALL SELECT 'db:' || datname FROM pg_database\"; fi")

    def process(self, output):
        return [line.strip() for line in output if line.strip()]


@operation()
def postgres_apply(sql_file: str, roles: list[str], databases: list[str],
                   sql_changed: bool):
    """Run the root-only SQL file as the postgres superuser when it changed or when a
    role or database it creates is missing. Passwords stay in the file, never in a
    command line."""
    present = set(host.get_fact(PostgresObjects) or [])
    wanted = {f"role:{r}" for r in roles} | {f"db:{d}" for d in databases}
    if not sql_changed and wanted <= present:
        host.noop("PostgreSQL roles and databases are in place")
        return
    yield f"cd / && sudo -u postgres psql -X -q -d postgres < {sql_file}"


@operation()
def unit_running(unit: str, restarted: bool = False, daemon_reload: bool = False):
    """Keep a systemd unit enabled and running; (re)start it only when needed. A start
    that fails prints the unit's last journal lines into the deploy's output."""
    running = (host.get_fact(SystemdStatus) or {}).get(unit)
    enabled = (host.get_fact(SystemdEnabled) or {}).get(unit)
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
def routes_current(config: str, wanted: str, command: str):
    """Run the readiness gate unless LiteLLM's config already routes to every model
    (`wanted`); the gate itself decides what is ready when it runs."""
    current = host.get_fact(Sha256File, path=config)
    if current == hashlib.sha256(wanted.encode()).hexdigest():
        host.noop("LiteLLM routes to every model")
        return
    yield command
