"""vLLM: one venv, one system user, one systemd unit per served model.

Every model entry runs, except the members of a swap group that stand by: of each
group, the member `sparkstack swap` chose (recorded on the host) runs, else the first
listed. A model's unit starts only after the memory-fit gate passed (fit.py). When a
run replaces a unit that runs now (changed flags or model, another member of a swap
group, a model dropped from the inventory), the change is a swap (swap.py): downloaded
first, make-before-break when both fit, rolled back when the new model fails.
"""

from __future__ import annotations

import json
import shlex
from io import StringIO

from pyinfra import logger
from pyinfra.operations import python, server, systemd
from sparkstack_host.contract import (
    DOWNLOAD,
    GATE,
    UNIT_DIR,
    VLLM_UNIT_GLOB,
    Manifest,
    local_url,
    vllm_unit,
)

from ...fleet import Fleet
from ...host_facts import Snapshot, snapshot
from ...operations import deb_packages, ensure_dir, put_file, unit_stopped
from ...settings import HostSettings
from ..base import install, prepare, run_unit, write_secrets, write_unit
from . import fit
from .swap import Swap, Unit


def requirements(s: HostSettings) -> str:
    lines = []
    if s["vllm_extra_index_url"]:
        lines.append(f"--extra-index-url {s['vllm_extra_index_url']}")
    lines.append(s["vllm_package"])
    return "\n".join(lines) + "\n"


# System calls the engine needs from the groups every unit is denied (@resources):
# libzmq sets its threads' scheduling policy, and the engine pins its threads to cores
# and its memory to NUMA nodes (the CPU engine always, CUDA builds for their workers).
ENGINE_SYSTEM_CALLS = ("sched_setscheduler", "sched_setaffinity", "mbind",
                       "set_mempolicy", "migrate_pages")


def vllm_args(model: dict, bind_address: str, shutdown_timeout: int) -> list[str]:
    """The `vllm serve` command line for one model entry (the API key comes from the
    unit's environment file as VLLM_API_KEY, never from the command line).
    `shutdown_timeout`: how long a stopping engine lets requests under way finish (by
    default it aborts them)."""
    args = ["serve", model["model"], "--served-model-name", model["name"],
            "--host", bind_address, "--port", str(model["port"]),
            "--max-model-len", str(model["max_model_len"]),
            "--gpu-memory-utilization", str(model["gpu_memory_utilization"]),
            "--max-num-seqs", str(model["max_num_seqs"]),
            "--shutdown-timeout", str(shutdown_timeout)]
    if model["revision"]:
        args += ["--revision", model["revision"]]
    if model["kv_cache_dtype"] != "auto":
        args += ["--kv-cache-dtype", model["kv_cache_dtype"]]
    if model["quantization"]:
        args += ["--quantization", model["quantization"]]
    if model["tool_call_parser"]:
        args += ["--enable-auto-tool-choice", "--tool-call-parser", model["tool_call_parser"]]
    if model["reasoning_parser"]:
        args += ["--reasoning-parser", model["reasoning_parser"]]
    if model["enable_prefix_caching"]:
        args += ["--enable-prefix-caching"]
    if model["load_format"]:
        args += ["--load-format", model["load_format"]]
    if model["trust_remote_code"]:
        args += ["--trust-remote-code"]
    return args + list(model["extra_args"])


UNIT_TEMPLATE = "vllm/vllm-model.service.j2"


def unit_context(s: HostSettings, model: dict, bind: str) -> dict:
    """What the unit template of one model needs besides the service's folders."""
    return dict(model=model, args=vllm_args(model, bind, s["litellm_timeout"]),
                environment={**s["vllm_environment"], **model["environment"]},
                host_ip="127.0.0.1",
                engine_system_calls=ENGINE_SYSTEM_CALLS,
                health_url=f"{local_url(bind, model['port'])}/health",
                gate=s.layout.host_program(GATE) if s.has("litellm") else "")


def chosen_members(s: HostSettings, state: Snapshot,
                   choose: dict[str, str] | None = None) -> dict[str, str]:
    """The member of each swap group that runs: `choose`, else the choice recorded on
    the host, else the first listed."""
    try:
        recorded = json.loads(state.content(s.layout.swap_choices) or "{}")
    except ValueError:
        recorded = {}
    recorded.update(choose or {})
    chosen = {}
    for group, members in s.swap_groups().items():
        names = [m["name"] for m in members]
        chosen[group] = recorded.get(group) if recorded.get(group) in names else names[0]
    return chosen


def needs_download(s: HostSettings, model: dict) -> bool:
    return s["prefetch_weights"] and not model["model"].startswith("/")


def download_command(s: HostSettings, model: dict) -> str:
    layout = s.layout
    return shlex.join(["runuser", "-u", s["vllm_user"], "--",
                       layout.host_program(DOWNLOAD), model["model"], "--revision",
                       model["revision"] or "main",
                       "--hf-home", layout.cache_dir("vllm", "huggingface"),
                       "--endpoint", s["hf_endpoint"]])


def deploy(s: HostSettings, fleet: Fleet, secrets: dict,
           choose: dict[str, str] | None = None) -> None:
    """`choose`: swap group -> member to run from now on (`sparkstack swap`)."""
    svc = prepare(s, "vllm", s["vllm_user"])
    layout = s.layout
    deb_packages(name="Install libnuma (vLLM's NUMA placement)", packages=["libnuma1"])
    for sub in ("", "huggingface", "vllm", "triton", "torchinductor"):
        path = layout.cache_dir("vllm", sub)
        ensure_dir(name=f"Create vLLM cache {path}", path=path, user=svc.user,
                   group=svc.user, mode="750")
    venv = install(svc, s["vllm_package"], requirements(s))
    # vLLM reads VLLM_API_KEY from its environment: the key never is on a command line.
    key = write_secrets(svc, "vLLM", {"VLLM_API_KEY": secrets["vllm_api_key"]})
    bind = fleet.vllm_bind_address(s)
    state = snapshot()
    chosen = chosen_members(s, state, choose)
    runs = [m for m in s.models if not m["swap_group"] or chosen[m["swap_group"]] == m["name"]]
    units = {m["name"]: write_unit(svc, vllm_unit(m["name"]), UNIT_TEMPLATE,
                                   **unit_context(s, m, bind)) for m in s.models}
    restart_all = venv.will_change or key.will_change

    starting = [m for m in runs if not state.running(vllm_unit(m["name"]))
                or units[m["name"]].will_change or restart_all]
    in_place = [vllm_unit(m["name"]) for m in starting if state.running(vllm_unit(m["name"]))]
    wanted = {vllm_unit(m["name"]) for m in s.models}
    stale = [p for p in state.files_matching(f"{UNIT_DIR}/{VLLM_UNIT_GLOB}")
             if p.rsplit("/", 1)[-1] not in wanted]
    going = [vllm_unit(m["name"]) for m in s.models
             if m not in runs and state.running(vllm_unit(m["name"]))]
    going += [p.rsplit("/", 1)[-1] for p in stale if state.running(p.rsplit("/", 1)[-1])]
    planned = fit.check(s, state, starting, in_place + going)
    for line in planned.lines:
        logger.info(f"    [{s.name}] {line}")

    if in_place or going:
        plan_swap(s, fleet, state, starting, in_place, going, stale, planned, units, choose,
                  venv)
    else:
        if planned.drop_caches:
            server.shell(name="Drop the page cache so the new models fit",
                         commands=["sync", "echo 3 > /proc/sys/vm/drop_caches"])
        for m in starting:
            if needs_download(s, m):
                server.shell(name=f"Download {m['model']} for {m['name']}",
                             commands=[download_command(s, m)])
        for m in runs:
            unit = vllm_unit(m["name"])
            run_unit(unit, f"Run {unit} (returns once the model answers)", units[m["name"]],
                     [venv, key])
        if choose:
            record_choices(s, chosen)
        for path in stale:
            unit = path.rsplit("/", 1)[-1]
            systemd.service(name=f"Disable {unit} (no longer in the inventory)",
                            service=unit, running=False, enabled=False)
            server.shell(name=f"Remove {unit}",
                         commands=[f"rm -f {path}", "systemctl daemon-reload"])
    for m in s.models:
        unit = vllm_unit(m["name"])
        if m not in runs and unit not in going:  # those the swap stops itself
            unit_stopped(name=f"{unit} stands by (swap group {m['swap_group']})", unit=unit)


def record_choices(s: HostSettings, chosen: dict[str, str]):
    return put_file(name="Record which member of each swap group runs",
                    src=StringIO(json.dumps(chosen, indent=1, sort_keys=True) + "\n"),
                    dest=s.layout.swap_choices, mode="644")


def plan_swap(s: HostSettings, fleet: Fleet, state: Snapshot, starting: list[dict],
              in_place: list[str], going: list[str], stale: list[str], planned: fit.FitPlan,
              units: dict, choose: dict | None, venv) -> None:
    """The swap: the transaction that runs once the new unit files are written."""
    def unit_of(model: dict) -> Unit:
        return Unit(vllm_unit(model["name"]), f"{s.name}:{model['port']}",
                    [h.name for h in fleet.litellm_hosts_routing_to(s, model)])

    try:  # ports of units dropped from the inventory: from the last deploy's manifest
        recorded = {m.unit: m for m in Manifest.from_json(
            state.content(s.layout.manifest) or "").models}
    except (ValueError, KeyError, TypeError):
        recorded = {}
    by_unit = {vllm_unit(m["name"]): m for m in s.models}
    stop = [unit_of(by_unit[u]) for u in in_place]
    for u in going:
        if u in by_unit:
            stop.append(unit_of(by_unit[u]))
        else:  # dropped from the inventory: only its own host's LiteLLM still routes it
            port = recorded[u].port if u in recorded else 0
            stop.append(Unit(u, f"{s.name}:{port}", [s.name] if s.has("litellm") else []))
    layout = s.layout
    previous = {path: state.content(path) for path in (layout.manifest, layout.routes_plan)
                if state.content(path) is not None}
    for m in starting:
        path = f"{UNIT_DIR}/{vllm_unit(m['name'])}"
        if units[m["name"]].will_change:
            previous[path] = state.content(path)  # None: a new unit, removed on rollback
    links = {}
    current = state.file(f"{layout.service_root('vllm')}/current") or {}
    if venv.will_change and current.get("target"):  # a new vLLM: the old one comes back
        links[layout.venv("vllm")] = current["target"]
    chosen = chosen_members(s, state, choose)
    record = {}
    if choose:
        record[layout.swap_choices] = json.dumps(chosen, indent=1, sort_keys=True) + "\n"
        previous.setdefault(layout.swap_choices, state.content(layout.swap_choices))
    transaction = Swap(
        host=s.name, layout=layout, mode=planned.mode, stop=stop,
        start=[unit_of(m) for m in starting],
        downloads=[(m["model"], m["revision"]) for m in starting if needs_download(s, m)],
        drop_caches=planned.drop_caches, previous=previous, links=links,
        vllm_user=s["vllm_user"],
        hf_endpoint=s["hf_endpoint"], record=record,
        layouts={h.name: h.layout for h in fleet.hosts.values() if h.has("litellm")},
        disable=[u for u in going], remove=[p for p in stale])
    python.call(name=f"Swap models: {transaction.describe()}", function=transaction.run)
