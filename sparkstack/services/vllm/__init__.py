"""vLLM: one venv, one system user, one systemd unit per served model.

Every model entry runs, except the members of a swap group that stand by: of each
group, the member `sparkstack swap` chose (recorded on the host) runs, else the first
listed. A model's unit starts only after the memory-fit gate passed (fit.py). Whatever
a run does with the units (a first start, a changed flag or model, another member of a
swap group, a model dropped from the inventory) is one planned transaction
(`UnitsPlan` -> swap.py): weights downloaded first, make-before-break when both fit, and
when it replaced something that ran, rolled back if the new model fails.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass

from pyinfra import logger
from pyinfra.operations import files, python
from sparkstack_host.contract import (
    DOWNLOAD,
    GATE,
    UNIT_DIR,
    CLUSTER_UNIT_GLOB,
    VLLM_UNIT_GLOB,
    Manifest,
    backend_id,
    cluster_unit,
    local_url,
    vllm_unit,
)

from ...fleet import Fleet
from ...host_facts import Snapshot, snapshot
from ...operations import deb_packages, ensure_dir, unit_enabled, unit_running, unit_stopped
from ...settings import HostSettings
from ..base import (
    Deployment,
    ServiceInfo,
    install,
    prepare,
    write_secrets,
    write_unit,
)
from . import cluster, fit
from .fit import needs_download
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


def unit_context(s: HostSettings, model: dict, bind: str, fleet: Fleet) -> dict:
    """What the unit template of one model needs besides the service's folders (a model
    that spans Sparks: its leader's part, cluster.py)."""
    context = dict(model=model, args=vllm_args(model, bind, s["litellm_timeout"]),
                   environment={**s["vllm_environment"], **model["environment"]},
                   host_ip="127.0.0.1", launcher=[], wait_args=[], node=None,
                   engine_system_calls=ENGINE_SYSTEM_CALLS,
                   health_url=f"{local_url(bind, model['port'])}/health",
                   gate=s.layout.host_program(GATE) if s.has("litellm") else "")
    part = cluster.part_of(s, model, fleet)
    if part:
        context.update(args=context["args"] + cluster.node_args(model, 0, s["link_address"]),
                       environment={**cluster.link_environment(s), **context["environment"]},
                       host_ip=s["link_address"], launcher=part.launcher(s),
                       wait_args=part.wait_args())
    return context


def node_context(s: HostSettings, part: cluster.Part) -> dict:
    """The unit of this host's part of a model another Spark leads: `vllm serve
    --headless`, no API, no route; the leader's settings for the model, this host's for
    the engine and the link."""
    model = part.model
    return dict(model=model, node=part,
                args=vllm_args(model, "127.0.0.1", s["litellm_timeout"])
                + cluster.node_args(model, part.rank, part.leader["link_address"]),
                environment={**cluster.link_environment(s), **s["vllm_environment"],
                             **model["environment"]},
                host_ip=s["link_address"], launcher=part.launcher(s), wait_args=[],
                engine_system_calls=ENGINE_SYSTEM_CALLS, health_url="", gate="")


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


def download_command(s: HostSettings, model: dict) -> str:
    """Started as root, the download reads the Hugging Face token (when there is one)
    from vLLM's root-only environment file, then becomes the vLLM user."""
    layout = s.layout
    return shlex.join([layout.host_program(DOWNLOAD), model["model"], "--revision",
                       model["revision"] or "main",
                       "--hf-home", layout.cache_dir("vllm", "huggingface"),
                       "--endpoint", s["hf_endpoint"], "--as-user", s["vllm_user"],
                       "--token-from", layout.secrets_env("vllm")])


def deploy(d: Deployment) -> None:
    """`d.choose`: swap group -> member to run from now on (`sparkstack swap`)."""
    s, fleet, secrets, choose = d.s, d.fleet, d.secrets, d.choose or None
    svc = prepare(s, "vllm", s["vllm_user"])
    layout = s.layout
    deb_packages(name="Install libnuma (vLLM's NUMA placement)", packages=["libnuma1"])
    for sub in ("", "huggingface", "vllm", "triton", "torchinductor"):
        path = layout.cache_dir("vllm", sub)
        ensure_dir(name=f"Create vLLM cache {path}", path=path, user=svc.user,
                   group=svc.user, mode="750")
    venv = install(svc, s["vllm_package"], requirements(s))
    # vLLM reads VLLM_API_KEY and HF_TOKEN (gated repos) from its environment: neither
    # is ever on a command line or in the unit file.
    values = {"VLLM_API_KEY": secrets["vllm_api_key"]}
    if s["hf_token"]:
        values["HF_TOKEN"] = s["hf_token"]
    key = write_secrets(svc, "vLLM", values)
    bind = fleet.vllm_bind_address(s)
    units = {m["name"]: write_unit(svc, vllm_unit(m["name"]), UNIT_TEMPLATE,
                                   **unit_context(s, m, bind, fleet)) for m in s.models}
    cluster_parts(s, svc, fleet)
    plan = UnitsPlan.of(s, snapshot(), {n: op.will_change for n, op in units.items()},
                        restart_all=venv.will_change or key.will_change, choose=choose)
    for line in plan.fit.lines:
        logger.info(f"    [{s.name}] {line}")
    if plan.changes_anything:
        transaction = plan.transaction(fleet, venv.will_change)
        python.call(name=f"vLLM: {transaction.describe()}", function=transaction.run)
    for m in plan.runs:
        if m not in plan.starting:  # running and unchanged: kept running and enabled
            unit_running(name=f"Keep {vllm_unit(m['name'])} running", unit=vllm_unit(m["name"]))
    for m in s.models:
        unit = vllm_unit(m["name"])
        if m not in plan.runs and unit not in plan.going:  # those the transaction stops
            unit_stopped(name=f"{unit} stands by (swap group {m['swap_group']})", unit=unit)


def cluster_parts(s: HostSettings, svc, fleet: Fleet) -> None:
    """This host's parts of models other Sparks lead: their units written and enabled
    (they start at boot and wait for their leader); the leader's run starts and stops
    them, in order with its own unit. Parts this host no longer has are stopped and
    removed."""
    parts, state = cluster.parts_on(s, fleet), snapshot()
    wanted = set()
    for part in parts:
        unit = cluster_unit(part.model["name"])
        wanted.add(unit)
        written = write_unit(svc, unit, UNIT_TEMPLATE, **node_context(s, part))
        if written.will_change or not state.running(unit):  # its share must fit here too
            for line in fit.check(s, state, [part.model], []).lines:
                logger.info(f"    [{s.name}] {line} (led by {part.leader.name})")
        unit_enabled(name=f"Enable {unit} (led by {part.leader.name})", unit=unit,
                     daemon_reload=written.will_change)
    for path in snapshot().files_matching(f"{UNIT_DIR}/{CLUSTER_UNIT_GLOB}"):
        unit = path.rsplit("/", 1)[-1]
        if unit not in wanted:
            unit_stopped(name=f"{unit}: this Spark is no longer part of its cluster",
                         unit=unit)
            files.file(name=f"Remove {unit}", path=path, present=False)


@dataclass
class UnitsPlan:
    """What one run does with a host's vLLM units, decided before anything changes: a
    first start, a flag change, a declarative swap and an on-demand one alike. The
    transaction it makes (swap.py) starts `starting` and stops `going` (and the running
    units that restart), make-before-break when the fit allows."""

    s: HostSettings
    state: Snapshot
    choose: dict[str, str] | None
    chosen: dict[str, str]          # swap group -> the member that runs
    runs: list[dict]                # the models that run once it is done
    starting: list[dict]            # of those, the ones that (re)start
    in_place: list[str]             # units that run now and restart
    going: list[str]                # units that run now and stop (stand by, or gone)
    stale: list[str]                # unit files of models gone from the inventory
    changed_units: dict[str, bool]  # model -> its unit file changes in this run
    fit: fit.FitPlan

    @classmethod
    def of(cls, s: HostSettings, state: Snapshot, changed_units: dict[str, bool],
           restart_all: bool = False, choose: dict[str, str] | None = None) -> UnitsPlan:
        chosen = chosen_members(s, state, choose)
        runs = [m for m in s.models
                if not m["swap_group"] or chosen[m["swap_group"]] == m["name"]]
        starting = [m for m in runs if not state.running(vllm_unit(m["name"]))
                    or changed_units[m["name"]] or restart_all]
        in_place = [vllm_unit(m["name"]) for m in starting
                    if state.running(vllm_unit(m["name"]))]
        wanted = {vllm_unit(m["name"]) for m in s.models}
        stale = [p for p in state.files_matching(f"{UNIT_DIR}/{VLLM_UNIT_GLOB}")
                 if p.rsplit("/", 1)[-1] not in wanted]
        going = [vllm_unit(m["name"]) for m in s.models
                 if m not in runs and state.running(vllm_unit(m["name"]))]
        going += [p.rsplit("/", 1)[-1] for p in stale if state.running(p.rsplit("/", 1)[-1])]
        return cls(s, state, choose, chosen, runs, starting, in_place, going, stale,
                   changed_units, fit.check(s, state, starting, in_place + going))

    @property
    def changes_anything(self) -> bool:
        recorded = self.choose and self.state.content(self.s.layout.swap_choices) != \
            choices_text(self.chosen)
        return bool(self.starting or self.going or self.stale or recorded)

    def transaction(self, fleet: Fleet, new_vllm: bool) -> Swap:
        """The run's transaction, once the new unit files are written. `new_vllm`: the
        run switches to another vLLM venv (the old one comes back on a rollback)."""
        from pyinfra import state as run_state

        from ...context import current_run
        s, state, layout = self.s, self.state, self.s.layout

        def unit_of(model: dict) -> Unit:
            part = cluster.part_of(s, model, fleet)
            return Unit(vllm_unit(model["name"]), backend_id(s.name, model["port"]),
                        [h.name for h in fleet.litellm_hosts_routing_to(s, model)],
                        [(h.name, cluster_unit(model["name"])) for h in part.others]
                        if part else [])

        try:  # ports of units dropped from the inventory: from the last deploy's manifest
            recorded = {m.unit: m for m in Manifest.from_json(
                state.content(layout.manifest) or "").models}
        except (ValueError, KeyError, TypeError):
            recorded = {}
        by_unit = {vllm_unit(m["name"]): m for m in s.models}
        stop = [unit_of(by_unit[u]) for u in self.in_place]
        for u in self.going:
            if u in by_unit:
                stop.append(unit_of(by_unit[u]))
            else:  # dropped from the inventory: only its own host's LiteLLM routes it
                port = recorded[u].port if u in recorded else 0
                stop.append(Unit(u, backend_id(s.name, port),
                                 [s.name] if s.has("litellm") else []))
        start = [unit_of(m) for m in self.starting]
        previous = {path: state.content(path) for path in (layout.manifest,
                                                            layout.routes_plan)
                    if state.content(path) is not None}
        for m in self.starting:
            if self.changed_units[m["name"]]:  # None: a new unit, removed on rollback
                path = f"{UNIT_DIR}/{vllm_unit(m['name'])}"
                previous[path] = state.content(path)
        links = {}
        current = state.file(f"{layout.service_root('vllm')}/current") or {}
        if new_vllm and current.get("target"):
            links[layout.venv("vllm")] = current["target"]
        record = {}
        if self.choose:
            record[layout.swap_choices] = choices_text(self.chosen)
            previous.setdefault(layout.swap_choices, state.content(layout.swap_choices))
        run = current_run(run_state)
        involved = {s.name, *(h for u in stop + start for h in u.litellm_hosts),
                    *(h for u in stop + start for h, _ in u.nodes)}
        return Swap(
            host=s.name, shells={name: run.shell(run_state.inventory.get_host(name))
                                 for name in involved},
            mode=self.fit.mode, stop=stop, start=start,
            downloads=[(m["model"], m["revision"], download_command(s, m))
                       for m in self.starting if needs_download(s, m)] + [
                (m["model"], m["revision"], download_command(node, m), node.name)
                for m in self.starting if (part := cluster.part_of(s, m, fleet))
                for node in part.others if needs_download(node, m)],
            drop_caches=self.fit.drop_caches, previous=previous, links=links,
            record=record, disable=self.going + [p.rsplit("/", 1)[-1] for p in self.stale
                                                 if p.rsplit("/", 1)[-1] not in self.going],
            remove=list(self.stale))


def choices_text(chosen: dict[str, str]) -> str:
    """The recorded swap choices (`<state_root>/vllm/swap-choices.json`)."""
    return json.dumps(chosen, indent=1, sort_keys=True) + "\n"


SERVICE = ServiceInfo(role="vllm", label="vLLM", deploy=deploy, requirements=requirements,
                      units=lambda s: [vllm_unit(m["name"]) for m in s.models])
