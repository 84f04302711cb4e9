"""Health of one Spark, checked on the Spark itself (as root):

    sparkstack-health [--config-root DIR] [--json]

GPU probe, memory headroom, every sparkstack unit, each vLLM model's readiness,
PostgreSQL, LiteLLM and Open WebUI endpoints, and one completion per LiteLLM profile in
both OpenAI and Anthropic formats. Checks run in parallel; each result says what to do
when it fails. `sparkstack health` runs this on every host of an inventory.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import psutil

from . import auto_route, gpu, ready, routes
from .cluster_node import missing
from .wait_ready import unix_get
from .contract import (
    DEFAULT_CONFIG_ROOT,
    HEALTH,
    FRONTDOOR_UNIT,
    LITELLM_UNIT_GLOB,
    litellm_process_socket,
    litellm_unit,
    OPENWEBUI_UNIT,
    POSTGRES_UNIT,
    Layout,
    Manifest,
    ManifestModel,
    ManifestPart,
    RoutesPlan,
    cluster_unit,
    vllm_unit,
    load_env_file,
    local_routes,
)

HEADROOM_GIB = 2.0


def _result(name: str, fn: Callable[[], tuple[bool, str, str]]) -> dict:
    start = time.monotonic()
    try:
        ok, detail, advice = fn()
    except Exception as e:  # a check that breaks is a failed check, not a crash
        ok, detail, advice = False, f"{e.__class__.__name__}: {e}", "see the detail"
    return {"check": name, "ok": ok, "seconds": round(time.monotonic() - start, 2),
            "detail": detail, "advice": "" if ok else advice}


def check_gpu() -> tuple[bool, str, str]:
    r = gpu.probe()
    if not r["gpu_found"]:
        return False, r["error"], ("install or repair the NVIDIA driver (nvidia-smi must "
                                   "work), then reboot")
    d = r["devices"][0]
    return True, (f"{d['name']}, cc {d['compute_capability']}, {d['temperature_c']} C, "
                  f"{d['power_w']} W, memory from {r['memory_source']}"), ""


def check_memory() -> tuple[bool, str, str]:
    vm = psutil.virtual_memory()
    available = vm.available / gpu.GIB
    return (available >= HEADROOM_GIB,
            f"{available:.1f} GiB available of {vm.total / gpu.GIB:.1f} GiB",
            "lower a model's gpu_memory_utilization or serve fewer models on this Spark")


def check_unit(unit: str) -> tuple[bool, str, str]:
    state = _state(unit)
    if state == "active":
        return True, "active", ""
    tail = subprocess.run(["journalctl", "-u", unit, "-n", "3", "--no-pager", "-o", "cat"],
                          capture_output=True, text=True).stdout.strip().replace("\n", " | ")
    return False, f"{state}" + (f": {tail}" if tail else ""), (
        f"systemctl start {unit}, or read journalctl -u {unit} -n 50; a re-deploy "
        "restores its configuration")


def _state(unit: str) -> str:
    return subprocess.run(["systemctl", "is-active", unit], capture_output=True,
                          text=True).stdout.strip()


def check_group(members: list[ManifestModel], active: set[str]) -> tuple[bool, str, str]:
    """One member of a swap group runs; the others stand by."""
    running = [m.name for m in members if m.unit in active]
    standing = [m.name for m in members if m.unit not in active]
    detail = (f"running {', '.join(running) or 'none'}; standing by: "
              f"{', '.join(standing) or 'none'}")
    return len(running) == 1, detail, ("sparkstack swap MODEL runs the member you want; "
                                       "a deploy restores the recorded choice")


def check_model(model: ManifestModel, key: str) -> tuple[bool, str, str]:
    r = ready.probe(model.url, model.name, model.max_model_len, key, timeout=5)
    advice = {"loading": "still loading: a first start compiles kernels for up to 30 min; "
                         f"follow journalctl -u {model.unit} -f",
              "unhealthy": f"restart {model.unit}; if it persists re-deploy"}
    return r.ready, f"{r.state}: {r.detail}", advice.get(r.state, "")


def check_cluster(host: str, model: ManifestModel) -> tuple[bool, str, str]:
    """A model this host leads across Sparks: every node has joined (vLLM keeps
    connections open with each over the direct link)."""
    absent = missing(None, list(model.cluster_nodes.values()))
    lost = [name for name, address in model.cluster_nodes.items() if address in absent]
    nodes = [f"{name} {'MISSING' if name in lost else 'joined'}" for name in model.cluster_nodes]
    return not lost, f"{host} leads; " + ", ".join(nodes), (
        f"on {', '.join(lost)}: systemctl status {cluster_unit(model.name)}; the leader "
        f"answers once every node has joined (journalctl -u {model.unit} names the ones "
        "missing)")


def check_part(part: ManifestPart) -> tuple[bool, str, str]:
    """This host's part of a model another Spark leads: joined to its leader."""
    leader = f"{part.leader} ({part.leader_address}:{part.master_port})"
    if missing(part.leader_address, []):
        return False, f"node {part.rank}, not joined to its leader {leader}", (
            f"check that {part.leader} runs {vllm_unit(part.model)} and that this Spark "
            f"reaches {part.leader_address} on the direct link")
    return True, f"node {part.rank}, joined to its leader {leader}", ""


def check_http(url: str, what: str, unit: str) -> tuple[bool, str, str]:
    reply = httpx.get(url, timeout=5)
    return (reply.status_code == 200, f"{what} answered {reply.status_code}",
            f"systemctl restart {unit}; journalctl -u {unit} -n 50")


def check_postgres(port: int) -> tuple[bool, str, str]:
    rc = subprocess.run(["pg_isready", "-q", "-h", "127.0.0.1", "-p", str(port)]).returncode
    return rc == 0, "accepting connections" if rc == 0 else f"pg_isready exit {rc}", \
        "systemctl restart postgresql; journalctl -u postgresql -n 50"


# A one-token answer takes milliseconds from a ready model and about a second from the
# cloud; one that takes longer is reported as such rather than waited out (a cloud that
# does not answer would hold it for LiteLLM's whole timeout).
COMPLETION_SECONDS = 8


def check_completion(base: str, key: str, profile: str, api: str) -> tuple[bool, str, str]:
    try:
        return _completion(base, key, profile, api)
    except httpx.TimeoutException:
        return False, f"no answer within {COMPLETION_SECONDS} s", (
            "the profile's models are busy or its cloud model does not answer: see the "
            f"vllm rows above and the cloud key; journalctl -u '{LITELLM_UNIT_GLOB}' -n 50")


def _completion(base: str, key: str, profile: str, api: str) -> tuple[bool, str, str]:
    if api == "openai":
        reply = httpx.post(f"{base}/v1/chat/completions", timeout=COMPLETION_SECONDS,
                           headers={"Authorization": f"Bearer {key}"},
                           json={"model": profile, "max_tokens": 1,
                                 "messages": [{"role": "user", "content": "ping"}]})
    else:
        reply = httpx.post(f"{base}/v1/messages", timeout=COMPLETION_SECONDS,
                           headers={"x-api-key": key, "anthropic-version": "2023-06-01"},
                           json={"model": profile, "max_tokens": 1,
                                 "messages": [{"role": "user", "content": "ping"}]})
    ok = reply.status_code == 200
    detail = f"answered {reply.status_code}" + ("" if ok else f": {reply.text[:160]}")
    return ok, detail, ("check the profile's local models above and its cloud key; "
                        f"journalctl -u '{LITELLM_UNIT_GLOB}' -n 50")


def check_litellm_ui(base: str, has_database: bool) -> tuple[bool, str, str]:
    """LiteLLM's UI (/ui) logs in only with its own database, which the deploy gives it
    only with litellm_request_log (Prisma downloads its engines on first start)."""
    if not has_database:
        return True, ("off: LiteLLM's own database is off (litellm_request_log: false), "
                      "so /ui cannot log in; sparkstack usage reports the request log"), ""
    db = httpx.get(f"{base}/health/readiness", timeout=5).json().get("db", "unknown")
    if db == "connected":
        return True, "at /ui, its database connected (sparkstack logins)", ""
    return False, f"/ui cannot log in: LiteLLM's database is {db!r}", (
        f"journalctl -u '{LITELLM_UNIT_GLOB}' | grep -i prisma (its engines download on "
        "the first start and need the internet); sparkstack usage works without it")


def check_classifier(name: str, route: dict, key: str | None) -> tuple[bool, str, str]:
    """Does the auto profile's classifier answer a label within its budget?"""
    async def ask():
        async with httpx.AsyncClient(trust_env=False) as client:
            return await auto_route.by_classifier(
                route, auto_route.Request("Why does this Python loop never end?", 40, False),
                client, key)
    d = asyncio.run(ask())
    c = route["classifier"]
    if d.layer == "classifier":
        return True, (f"{c['model']} answered {d.profile!r} in {d.classifier_ms:.0f} ms "
                      f"(budget {c['budget_ms']} ms)"), ""
    return False, (f"{c['model']}: {d.reason} ({d.classifier_ms:.0f} ms, budget "
                   f"{c['budget_ms']} ms); {name} sends what no rule matches to "
                   f"{route['default']}"), (
        f"see the vllm {c['model']} row above; a slow one needs a larger budget_ms or a "
        "smaller model")


def check_process(process: int) -> tuple[bool, str, str]:
    """Does LiteLLM process `process` answer on its own socket (behind the front door)?"""
    unit = litellm_unit(process)
    try:
        status, _ = unix_get(litellm_process_socket(process), "/health/liveliness")
    except OSError as e:
        return False, f"not answering ({e.strerror or e})", (
            f"the other processes answer meanwhile; systemctl restart {unit}; "
            f"journalctl -u {unit} -n 50")
    return status == 200, f"answers on its socket ({status})", \
        f"systemctl restart {unit}; journalctl -u {unit} -n 50"


def check_routes(layout: Layout, plan: RoutesPlan) -> tuple[bool, str, str]:
    """Does LiteLLM route to every model its plan names? A model that is not ready
    leaves its profiles on the cloud until the gate sees it ready."""
    local = local_routes(routes.read_config(Path(layout.litellm_config)))
    routed = {backend for _, backend in local}
    drained = routes.drained(layout) & set(plan.backends)  # on purpose: a swap, an update
    standing_by = {bid for bid, b in plan.backends.items() if b.swap_group} - routed
    missing = sorted(set(plan.backends) - routed - drained - standing_by)
    if not missing:
        note = f"; drained: {', '.join(sorted(drained))}" if drained else ""
        return True, f"all {len(routed)} model routes on{note}", ""
    profiles_off = sorted(set(plan.standby) - {profile for profile, _ in local})
    return (False, f"not routed (not ready): {', '.join(missing)}; on the cloud only: "
                   f"{', '.join(profiles_off) or 'none'}",
            "see the vllm checks of those hosts; the route comes back by itself within "
            "litellm_routes_interval once the model is ready")


def profiles(base: str, key: str) -> list[str]:
    """LiteLLM's model names clients use (not wildcard aliases)."""
    reply = httpx.get(f"{base}/v1/models", timeout=5, headers={"Authorization": f"Bearer {key}"})
    reply.raise_for_status()
    return sorted(m["id"] for m in reply.json()["data"]
                  if "*" not in m["id"])


def run(config_root: str = DEFAULT_CONFIG_ROOT) -> list[dict]:
    manifest = Manifest.load(config_root)
    layout, roles = manifest.layout, manifest.roles
    jobs: list[tuple[str, Callable]] = [("gpu", check_gpu), ("memory", check_memory)]
    units = []
    if "postgres" in roles:
        units.append(POSTGRES_UNIT)
        jobs.append(("postgres", lambda: check_postgres(manifest.postgres_port)))
    if "vllm" in roles:
        key = load_env_file(layout.secrets_env("vllm"))["VLLM_API_KEY"]
        groups: dict[str, list[ManifestModel]] = {}
        for m in manifest.models:
            if m.swap_group:
                groups.setdefault(m.swap_group, []).append(m)
        active = {m.unit for m in manifest.models if not m.swap_group
                  or _state(m.unit) in ("active", "activating", "reloading")}
        for m in manifest.models:
            if m.unit in active:
                units.append(m.unit)
                jobs.append((f"vllm {m.name}", lambda m=m: check_model(m, key)))
            if m.cluster_nodes:
                jobs.append((f"cluster {m.name}",
                             lambda m=m: check_cluster(manifest.host, m)))
        for part in manifest.parts:
            units.append(part.unit)
            jobs.append((f"cluster {part.model}", lambda part=part: check_part(part)))
        for group, members in groups.items():
            jobs.append((f"swap group {group}",
                         lambda members=members: check_group(members, active)))
    if "litellm" in roles:
        plan = RoutesPlan.from_json(Path(layout.routes_plan).read_text())
        processes = range(1, plan.processes + 1)
        units += [FRONTDOOR_UNIT, *(litellm_unit(i) for i in processes)]
        base = manifest.litellm_url
        jobs.append(("litellm", lambda: check_http(f"{base}/health/liveliness",
                                                   "liveliness (through the front door)",
                                                   FRONTDOOR_UNIT)))
        jobs += [(f"litellm process {i}", lambda i=i: check_process(i)) for i in processes]
        jobs.append(("litellm routes", lambda: check_routes(layout, plan)))
        env = load_env_file(layout.secrets_env("litellm"))
        master = env["LITELLM_MASTER_KEY"]
        jobs.append(("litellm ui", lambda: check_litellm_ui(base, "DATABASE_URL" in env)))
        try:
            names = profiles(base, master)
        except httpx.HTTPError:
            names = []  # the liveliness check above reports LiteLLM being down
        for name, route in auto_route.load_routes(layout.auto_routes).items():
            if route.get("classifier"):
                jobs.append((f"auto {name} classifier",
                             lambda name=name, route=route: check_classifier(
                                 name, route, env.get("VLLM_API_KEY"))))
        for p in names:
            for api in ("openai", "anthropic"):
                jobs.append((f"profile {p} ({api})",
                             lambda p=p, api=api: check_completion(base, master, p, api)))
    if "openwebui" in roles:
        units.append(OPENWEBUI_UNIT)
        jobs.append(("openwebui", lambda: check_http(f"{manifest.openwebui_url}/health",
                                                     "/health", OPENWEBUI_UNIT)))
    jobs[2:2] = [(f"unit {u}", lambda u=u: check_unit(u)) for u in units]
    with ThreadPoolExecutor(max_workers=16) as pool:
        return list(pool.map(lambda job: _result(*job), jobs))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog=HEALTH)
    p.add_argument("--json", action="store_true")
    p.add_argument("--config-root", default=DEFAULT_CONFIG_ROOT,
                   help="the deploy's config_root (default %(default)s)")
    args = p.parse_args(argv)
    results = run(args.config_root)
    if args.json:
        print(json.dumps(results))
    else:
        for r in results:
            print(f"{'ok ' if r['ok'] else 'BAD'} {r['check']:32} {r['seconds']:5.2f} s  "
                  f"{r['detail']}" + (f"  -> {r['advice']}" if r["advice"] else ""))
    return 0 if all(r["ok"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
