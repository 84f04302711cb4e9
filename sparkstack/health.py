"""`sparkstack health`: run the host package's health check on every host of the
inventory in parallel, then print one table (or JSON)."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

from sparkstack_host.contract import HEALTH

from .host_shell import HostShell, shells_of


def check_host(shell: HostShell) -> list[dict]:
    start = time.monotonic()
    try:
        rows = shell.program_json(HEALTH, "--json")
    except Exception as e:  # unreachable, not deployed: a row of its own, never a crash
        rows = [{"check": "checks on the host", "ok": False,
                 "seconds": round(time.monotonic() - start, 2),
                 "detail": str(e).strip()[-300:] or type(e).__name__,
                 "advice": "is the host reachable over SSH, and was it deployed? "
                           "(pyinfra inventory.py deploy.py)"}]
    return [{"host": shell.name, **row} for row in rows]


def run(inventory_path: str, limit: tuple[str, ...] = ()) -> list[dict]:
    shells = shells_of(inventory_path, limit)
    with ThreadPoolExecutor(max_workers=max(1, len(shells))) as pool:
        return [row for rows in pool.map(check_host, shells) for row in rows]


def table(rows: list[dict]) -> str:
    if not rows:
        return "unhealthy: no host was checked (does --limit name one of the inventory?)"
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
