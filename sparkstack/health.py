"""`sparkstack health`: run the host package's health check on every host of the
inventory in parallel over SSH, then print one table (or JSON)."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor

from sparkstack_host.contract import HEALTH

from .remote import inventory_hosts, run_program


def check_host(host) -> list[dict]:
    start = time.monotonic()
    proc = run_program(host, HEALTH, "--json")
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
    hosts = inventory_hosts(inventory_path, limit)
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
