"""The readiness gate in front of LiteLLM: route a profile to a local model only while
that model passes the readiness probe; until then the profile goes straight to its
cloud fallback.

    sparkstack-routes [--config-root DIR] [--drain MODEL|BACKEND]... [--undrain ...]...
                      [--undrain-remote] [--apply]

The deploy writes the plan (`routes.json`, `contract.RoutesPlan`: LiteLLM's config with
every local route, how to probe each backend, and the cloud-only entry of each
profile). This command probes the backends, writes LiteLLM's `config.yaml` with the
ready ones only, and with
`--apply` makes every running LiteLLM process take the new routes, in place
(`litellm_serve`), and returns only once each has; a process that fails to is restarted
(the others answer meanwhile). A drain then waits until the model has finished the
requests it was given.

It runs in LiteLLM's ExecStartPre (boot: models still loading), in each local vLLM
unit's ExecStartPost (`--undrain`: the model just became ready) and ExecStop
(`--drain`: take the route out before the model stops), from a timer (remote models)
and at the end of a deploy. A drained model stays out until its unit starts again.
`--drain`/`--undrain` name a model served on this host or a backend `host:port`
anywhere in the fleet: a swap or an update drains a Spark's model out of every
LiteLLM that routes to it before the model stops; a deploy ends with
`--undrain-remote`, so a drain left by an interrupted run does not outlive it.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from .contract import (
    DEFAULT_CONFIG_ROOT,
    GATE,
    Layout,
    RoutesPlan,
    assemble_config,
    load_env_file,
    local_routes,
    read_config_text,
    litellm_unit,
    render_config,
)
from .litellm_serve import applied_file, applied_sha, reload_all
from .ready import probe


def read_config(path: Path) -> dict:
    return read_config_text(path.read_text() if path.is_file() else "")


def routed_backends(config_path: Path) -> set[str]:
    """Backends LiteLLM's current config routes to."""
    return {backend for _, backend in local_routes(read_config(config_path))}


def drained(layout: Layout) -> set[str]:
    """Backends kept out of LiteLLM's config, whatever their readiness."""
    folder = Path(layout.drained_dir)
    return {p.name for p in folder.iterdir()} if folder.is_dir() else set()


def backends_named(plan: RoutesPlan, names: list[str]) -> set[str]:
    """Backend ids for `names`: ids as they are, served names as this host's backends."""
    return {bid for bid, b in plan.backends.items() for name in names
            if bid == name or (b.local and b.served_name == name)}


def probe_backends(plan: RoutesPlan, skip: set[str], api_key: str | None) -> dict[str, str]:
    """Each backend's readiness as one word plus detail, probed in parallel."""
    backends = plan.backends

    def one(bid: str) -> str:
        b = backends[bid]
        if bid in skip:
            return "drained"
        r = probe(b.url, b.served_name, b.max_model_len, api_key, timeout=5)
        return "ready" if r.ready else f"{r.state} ({r.detail})"

    with ThreadPoolExecutor(max_workers=max(1, min(8, len(backends)))) as pool:
        return dict(zip(backends, pool.map(one, backends)))


def _systemctl(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["systemctl", *args], capture_output=True, text=True)


# a process still loading LiteLLM takes the routes once it has started
RELOAD_SECONDS = 120


def apply_to_litellm(processes: int, config: Path) -> str:
    """Make every running LiteLLM process take the new routes, all at once so that they
    change over together, each confirmed: no process routes to a drained model once this
    returns."""
    if _systemctl("is-system-running").stdout.strip() == "stopping":
        return "system is shutting down: LiteLLM left as it is"
    said, running = [], {}
    for process in range(1, processes + 1):
        shown = _systemctl("show", "-p", "ActiveState", "-p", "MainPID",
                           litellm_unit(process)).stdout
        props = dict(line.split("=", 1) for line in shown.splitlines() if "=" in line)
        state, pid = props.get("ActiveState", "unknown"), int(props.get("MainPID") or 0)
        if state not in ("active", "activating", "reloading") or not pid:
            said.append(f"{process} is {state} (reads them when it starts)")
        else:
            running[process] = pid
    missed = reload_all(running, config, RELOAD_SECONDS) if running else []
    took = [process for process in running if process not in missed]
    said += [f"{process} took them" for process in took]
    if len(took) > 1:  # requests sent in between may be routed either way
        said.append(f"changed over within {changeover_ms(took):.0f} ms of each other")
    for process in missed:
        unit = litellm_unit(process)
        restarted = _systemctl("restart", unit)
        if restarted.returncode != 0:
            raise RuntimeError(f"{unit}: did not take the routes and did not restart "
                               f"({restarted.stderr.strip()})")
        said.append(f"{process} restarted (it did not take them)")
    return "LiteLLM process " + "; ".join(sorted(said))


def changeover_ms(processes: list[int]) -> float:
    """How far apart the processes applied the routes (their confirmations' times)."""
    times = [applied_file(process).stat().st_mtime for process in processes]
    return (max(times) - min(times)) * 1000


def processes_behind(processes: int, config: Path) -> list[int]:
    """The running LiteLLM processes that have not applied `config` (a gate that wrote it
    and then failed to reload them leaves them so; the next one finishes the job)."""
    if not config.is_file():
        return []
    want = hashlib.sha256(config.read_bytes()).hexdigest()
    return [process for process in range(1, processes + 1)
            if applied_sha(process) not in (None, want)]


def requests_in_engine(url: str, timeout: float = 5) -> float | None:
    """Requests a vLLM engine is running or has queued (its num_requests_running and
    _waiting gauges); None when nothing listens there any more."""
    try:
        text = httpx.get(f"{url}/metrics", timeout=timeout).text
    except httpx.ConnectError:
        return None
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(("vllm:num_requests_running", "vllm:num_requests_waiting")))


def wait_idle(backend, timeout: float, log, probe_timeout: float = 10) -> None:
    """Wait until a drained model has finished the requests it was given, so stopping
    it cuts none. A busy engine may answer /metrics only after seconds (the real one on
    a loaded CPU held it for a whole generation): only a closed port means idle."""
    deadline = start = time.monotonic()
    deadline += timeout
    busy, said = -1.0, False
    while time.monotonic() < deadline:
        try:
            busy = requests_in_engine(backend.url, probe_timeout)
        except httpx.HTTPError:  # slow to answer: still working
            continue
        if busy is None:
            return  # not listening: nothing to wait for
        if busy == 0:
            if said:
                log(f"routes: {backend.served_name} finished its requests after "
                    f"{time.monotonic() - start:.1f} s")
            return
        if not said:
            log(f"routes: {backend.served_name} is drained; waiting for its {busy:.0f} "
                "request(s) under way")
            said = True
        time.sleep(0.2)
    log(f"routes: {backend.served_name} still has {busy:.0f} request(s) after "
        f"{timeout:.0f} s; stopping anyway")


def gate(layout: Layout, drain: list[str] = (), undrain: list[str] = (),
         apply: bool = False, log=print, undrain_remote: bool = False) -> bool:
    """Bring LiteLLM's config in line with the backends' readiness. Returns whether
    the config changed."""
    plan_path, config_path = Path(layout.routes_plan), Path(layout.litellm_config)
    if not plan_path.is_file():
        log(f"routes: no plan at {plan_path} (LiteLLM not deployed here): nothing to do")
        return False
    plan = RoutesPlan.from_json(plan_path.read_text())
    drained_dir = Path(layout.drained_dir)
    drained_dir.mkdir(parents=True, exist_ok=True)
    # one gate at a time; never held while LiteLLM restarts (its ExecStartPre gates too)
    with open(layout.gate_lock, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        for bid in backends_named(plan, list(drain)):
            (drained_dir / bid).touch()
        remote = {bid for bid, b in plan.backends.items() if not b.local}
        for bid in backends_named(plan, list(undrain)) | (remote if undrain_remote else set()):
            (drained_dir / bid).unlink(missing_ok=True)
        env = load_env_file(layout.secrets_env("litellm"))
        states = probe_backends(plan, drained(layout), env.get("VLLM_API_KEY"))
        ready = {bid for bid, state in states.items() if state == "ready"}
        text = render_config(assemble_config(plan, ready))
        old = config_path.read_text() if config_path.is_file() else ""
        changed = text != old
        if changed:
            tmp = config_path.with_name(".config.yaml.new")
            tmp.write_text(text)
            os.chmod(tmp, 0o640)
            os.chown(tmp, 0, config_path.parent.stat().st_gid)
            tmp.replace(config_path)
    for bid, state in sorted(states.items()):
        log(f"routes: {bid}: {'routed' if state == 'ready' else 'not routed, ' + state}")
    behind = processes_behind(plan.processes, config_path) if apply and not changed else []
    if changed and apply:
        log(f"routes: config changed; {apply_to_litellm(plan.processes, config_path)}")
    elif behind:
        log(f"routes: config unchanged, but LiteLLM process {', '.join(map(str, behind))} "
            f"runs on other routes; {apply_to_litellm(plan.processes, config_path)}")
    elif not changed:
        log("routes: config unchanged")
    for bid in sorted(backends_named(plan, list(drain))):
        wait_idle(plan.backends[bid], plan.drain_timeout, log)
    return changed


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog=GATE)
    p.add_argument("--config-root", default=DEFAULT_CONFIG_ROOT,
                   help="the deploy's config_root (default %(default)s)")
    p.add_argument("--drain", action="append", default=[], metavar="MODEL|HOST:PORT",
                   help="take the routes to this local model (or backend) out, and wait "
                        "until it has finished its requests")
    p.add_argument("--undrain", action="append", default=[], metavar="MODEL|HOST:PORT",
                   help="let this local model (or backend) be routed again once ready")
    p.add_argument("--undrain-remote", action="store_true",
                   help="let every backend on other Sparks be routed again once ready")
    p.add_argument("--apply", action="store_true",
                   help="make a running LiteLLM take the routes when its config changed")
    args = p.parse_args(argv)
    start = time.monotonic()
    try:
        gate(Layout(config_root=args.config_root), args.drain, args.undrain, args.apply,
             undrain_remote=args.undrain_remote,
             log=lambda line: print(line, flush=True))
    except (OSError, RuntimeError, ValueError) as e:
        print(f"routes: {e}", file=sys.stderr)
        return 1
    print(f"routes: done in {time.monotonic() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
