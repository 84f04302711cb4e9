"""Is a served model ready for traffic?

    sparkstack-ready http://127.0.0.1:8000 SERVED_NAME --max-model-len N
                     [--api-key-env VLLM_API_KEY] [--unit UNIT] [--wait SECONDS]

Ready means: /health answers 200, /v1/models lists the served name with the expected
max_model_len, and a one-token completion is answered. While waiting it tells "loading"
(port closed, unit still running) from "failed" (unit failed: the last journal lines).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Callable

import httpx


@dataclass
class Readiness:
    state: str                      # ready | loading | failed | unhealthy
    detail: str
    seconds: float = 0.0
    journal: list[str] = field(default_factory=list)

    @property
    def ready(self) -> bool:
        return self.state == "ready"


def probe(base_url: str, served_name: str, max_model_len: int | None,
          api_key: str | None = None, timeout: float = 10) -> Readiness:
    """One look: ready, loading (nothing listens yet) or unhealthy (answers wrongly)."""
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    try:
        with httpx.Client(base_url=base_url, headers=headers, timeout=timeout) as http:
            health = http.get("/health")
            if health.status_code != 200:
                return Readiness("unhealthy", f"/health answered {health.status_code}")
            models = http.get("/v1/models")
            if models.status_code != 200:
                return Readiness("unhealthy", f"/v1/models answered {models.status_code}")
            listed = {m["id"]: m for m in models.json().get("data", [])}
            if served_name not in listed:
                return Readiness("unhealthy", f"/v1/models lists {sorted(listed)}, "
                                              f"not {served_name}")
            got = listed[served_name].get("max_model_len")
            if max_model_len is not None and got != max_model_len:
                return Readiness("unhealthy", f"{served_name} serves max_model_len {got}, "
                                              f"expected {max_model_len}")
            reply = http.post("/v1/chat/completions", json={
                "model": served_name, "max_tokens": 1,
                "messages": [{"role": "user", "content": "ping"}]})
            if reply.status_code != 200 or not reply.json().get("choices"):
                return Readiness("unhealthy", f"a one-token completion answered "
                                              f"{reply.status_code}")
    except (httpx.ConnectError, httpx.RemoteProtocolError, httpx.ReadError):
        return Readiness("loading", "port not open yet")
    except httpx.TimeoutException:
        return Readiness("loading", "no answer within the timeout")
    return Readiness("ready", f"{served_name} answered (max_model_len {got})")


def systemd_unit(unit: str) -> tuple[Callable[[], str], Callable[[], list[str]]]:
    """State and last journal lines of a local systemd unit."""
    def state() -> str:
        return subprocess.run(["systemctl", "is-active", unit], capture_output=True,
                              text=True).stdout.strip()

    def journal() -> list[str]:
        out = subprocess.run(["journalctl", "-u", unit, "-n", "15", "--no-pager", "-o", "cat"],
                             capture_output=True, text=True).stdout
        return out.splitlines()
    return state, journal


def wait_ready(base_url: str, served_name: str, max_model_len: int | None, *,
               api_key: str | None = None, timeout: float = 1800,
               unit_state: Callable[[], str] | None = None,
               unit_journal: Callable[[], list[str]] | None = None,
               progress: Callable[[str], None] = lambda line: None,
               interval: float = 1.0) -> Readiness:
    """Wait until ready, until the unit fails, or until `timeout` seconds pass."""
    start = time.monotonic()
    last_report = -10.0
    while True:
        elapsed = time.monotonic() - start
        result = probe(base_url, served_name, max_model_len, api_key)
        result.seconds = round(elapsed, 1)
        if result.ready:
            return result
        state = unit_state() if unit_state else "active"
        if state == "failed" or state == "inactive":
            return Readiness("failed", f"unit is {state}: {result.detail}",
                             result.seconds, unit_journal() if unit_journal else [])
        if elapsed >= timeout:
            result.detail = f"not ready after {timeout:.0f} s: {result.detail}"
            return result
        if elapsed - last_report >= 5:
            progress(f"{served_name}: {result.state} ({result.detail}), {elapsed:.0f} s")
            last_report = elapsed
        time.sleep(interval)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="sparkstack-ready")
    p.add_argument("base_url")
    p.add_argument("served_name")
    p.add_argument("--max-model-len", type=int)
    p.add_argument("--api-key-env", default="VLLM_API_KEY")
    p.add_argument("--unit", help="systemd unit serving the model (tells loading from failed)")
    p.add_argument("--wait", type=float, default=0, help="seconds to wait for readiness")
    args = p.parse_args(argv)
    key = os.environ.get(args.api_key_env)
    state, journal = systemd_unit(args.unit) if args.unit else (None, None)
    result = wait_ready(args.base_url, args.served_name, args.max_model_len, api_key=key,
                        timeout=args.wait, unit_state=state, unit_journal=journal,
                        progress=lambda line: print(line, flush=True))
    print(f"{args.served_name}: {result.state} after {result.seconds} s ({result.detail})")
    for line in result.journal:
        print(f"    {line}")
    return 0 if result.ready else 1


if __name__ == "__main__":
    sys.exit(main())
