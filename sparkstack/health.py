"""`sparkstack health`: run checks/health.py on every host of the inventory in
parallel over SSH, then print one table (or JSON) and exit non-zero when anything is
unhealthy."""

from __future__ import annotations

import fnmatch
import json
import shlex
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

from pyinfra.api import State
from pyinfra.context import ctx_state
from pyinfra_cli.inventory import make_inventory

from .settings import load_defaults


def ssh_command(host) -> list[str]:
    d = host.data
    cmd = ["ssh", "-o", "BatchMode=yes", "-o", "ConnectTimeout=5", "-o", "LogLevel=ERROR"]
    if d.get("ssh_key"):
        cmd += ["-i", d.get("ssh_key")]
    if d.get("ssh_port"):
        cmd += ["-p", str(d.get("ssh_port"))]
    if d.get("ssh_strict_host_key_checking") == "off":
        cmd += ["-o", "StrictHostKeyChecking=no"]
    if d.get("ssh_known_hosts_file"):
        cmd += ["-o", f"UserKnownHostsFile={d.get('ssh_known_hosts_file')}"]
    user = d.get("ssh_user")
    target = d.get("ssh_hostname") or host.name
    return cmd + [f"{user}@{target}" if user else target]


def check_host(host) -> list[dict]:
    defaults = load_defaults()
    root = host.data.get("install_root", defaults["install_root"])
    config_root = host.data.get("config_root", defaults["config_root"])
    remote = (f"cd {shlex.quote(root)}/checks && venv/bin/python -m checks.health --json "
              f"--config-root {shlex.quote(config_root)}")
    if host.data.get("ssh_user") not in (None, "root"):
        remote = f"sudo -n sh -c {shlex.quote(remote)}"
    start = time.monotonic()
    proc = subprocess.run(ssh_command(host) + [remote], capture_output=True, text=True,
                          timeout=120)
    try:
        rows = json.loads(proc.stdout)
    except json.JSONDecodeError:
        rows = [{"check": "checks on the host", "ok": False,
                 "seconds": round(time.monotonic() - start, 2),
                 "detail": (proc.stderr or proc.stdout).strip()[-300:] or f"exit {proc.returncode}",
                 "advice": "is the host reachable over SSH, and was it deployed? "
                           "(pyinfra inventory.py deploy.py)"}]
    return [{"host": host.name, **row} for row in rows]


def run(inventory_path: str, limit: tuple[str, ...] = ()) -> list[dict]:
    with ctx_state.use(State()):  # pyinfra's inventory loader expects a state
        inventory = make_inventory(inventory_path)
    hosts = [h for h in inventory
             if not limit or any(fnmatch.fnmatch(h.name, pat) or pat in h.groups
                                 for pat in limit)]
    with ThreadPoolExecutor(max_workers=max(1, len(hosts))) as pool:
        return [row for rows in pool.map(check_host, hosts) for row in rows]


def table(rows: list[dict]) -> str:
    lines = [f"{'host':12} {'check':40} {'status':7} {'time':>7}  detail"]
    for r in rows:
        status = "ok" if r["ok"] else "FAILED"
        lines.append(f"{r['host']:12} {r['check']:40} {status:7} {r['seconds']:6.2f}s  "
                     f"{r['detail']}")
        if not r["ok"] and r.get("advice"):
            lines.append(f"{'':12} {'':40} {'':7} {'':7}  what to do: {r['advice']}")
    bad = sum(not r["ok"] for r in rows)
    lines.append(f"unhealthy: {bad} of {len(rows)} checks failed" if bad else
                 f"healthy: all {len(rows)} checks passed")
    return "\n".join(lines)
