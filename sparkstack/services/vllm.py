"""vLLM: one venv, one system user, one systemd unit per served model, each started
only after the memory-fit gate passed."""

from __future__ import annotations

import json

from pyinfra import host, logger
from pyinfra.api import FactBase
from pyinfra.api.exceptions import PyinfraError
from pyinfra.operations import files, server, systemd
from sparkstack_host import fit_inputs
from sparkstack_host.contract import (
    GATE,
    UNIT_DIR,
    VLLM_UNIT_GLOB,
    Manifest,
    local_url,
    vllm_unit,
)
from sparkstack_host.fit import Estimate, Memory, estimate

from ..fleet import Fleet
from ..host_facts import module_command, snapshot
from ..operations import ensure_dir
from ..settings import HostSettings
from .base import install, prepare, run_unit, write_secrets, write_unit


def requirements(s: HostSettings) -> str:
    lines = []
    if s["vllm_extra_index_url"]:
        lines.append(f"--extra-index-url {s['vllm_extra_index_url']}")
    lines.append(s["vllm_package"])
    return "\n".join(lines) + "\n"


def vllm_args(model: dict, bind_address: str) -> list[str]:
    """The `vllm serve` command line for one model entry (the API key comes from the
    unit's environment file as VLLM_API_KEY, never from the command line)."""
    args = ["serve", model["model"], "--served-model-name", model["name"],
            "--host", bind_address, "--port", str(model["port"]),
            "--max-model-len", str(model["max_model_len"]),
            "--gpu-memory-utilization", str(model["gpu_memory_utilization"]),
            "--max-num-seqs", str(model["max_num_seqs"])]
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


def deploy(s: HostSettings, fleet: Fleet, secrets: dict) -> None:
    svc = prepare(s, "vllm", s["vllm_user"])
    layout = s.layout
    for sub in ("", "huggingface", "vllm", "triton"):
        path = layout.cache_dir("vllm", sub)
        ensure_dir(name=f"Create vLLM cache {path}", path=path, user=svc.user,
                   group=svc.user, mode="750")
    venv = install(svc, s["vllm_package"], requirements(s))
    # vLLM reads VLLM_API_KEY from its environment: the key never is on a command line.
    key = write_secrets(svc, "vLLM", {"VLLM_API_KEY": secrets["vllm_api_key"]})
    bind = fleet.vllm_bind_address(s)
    state = snapshot()
    planned = 0  # memory of models this run starts before the next one
    wanted_units = set()
    for model in s.models:
        unit = vllm_unit(model["name"])
        wanted_units.add(unit)
        unit_file = write_unit(svc, unit, "vllm/vllm-model.service.j2", model=model,
                               args=vllm_args(model, bind),
                               environment={**s["vllm_environment"], **model["environment"]},
                               health_url=f"{local_url(bind, model['port'])}/health",
                               gate=layout.host_program(GATE) if s.has("litellm") else "")
        restart_on = [venv, key]
        starts = (not state.running(unit) or unit_file.will_change
                  or any(op.will_change for op in restart_on))
        if starts:
            planned += fit_gate(s, model, state.running(unit), planned)
        run_unit(unit, f"Run {unit} (returns once the model answers)", unit_file,
                 restart_on)
    remove_stale_units(wanted_units)


class ModelFitInputs(FactBase):
    """config.json, weight bytes and /proc/meminfo for one model, read on the host by
    `sparkstack_host.fit_inputs` run as itself with the host's python3 (nothing of
    sparkstack needs to be installed there yet)."""

    def command(self, model: str, hf_home: str, hub: str | None) -> str:
        args = ["--model", model, "--hf-home", hf_home] + (["--hub", hub] if hub else [])
        return module_command(fit_inputs, args)

    def process(self, output):
        return json.loads("\n".join(output))


def running_budget(s: HostSettings, model_name: str, memory_total: int) -> int:
    """Memory the running unit of `model_name` holds, as the manifest of the last
    deploy records it (0 when none is recorded)."""
    try:
        recorded = Manifest.from_json(snapshot().content(s.layout.manifest) or "").model(
            model_name)
    except (ValueError, KeyError, TypeError):  # no manifest yet, or an older schema
        return 0
    return int(recorded.gpu_memory_utilization * memory_total) if recorded else 0


def fit_gate(s: HostSettings, model: dict, was_running: bool, planned: int) -> int:
    """Refuse a model that does not fit (raises before any change); drop the page
    cache first when only that makes it fit. Returns the memory it will take."""
    inputs = host.get_fact(ModelFitInputs, model=model["model"],
                           hf_home=s.layout.cache_dir("vllm", "huggingface"),
                           hub=s["hf_endpoint"] if s["fit_check_hub"] else None)
    if "unknown" in inputs:
        logger.warning(f"    [{s.name}] fit of {model['name']} not checked: {inputs['unknown']}")
        return 0
    memory = Memory.from_meminfo(inputs["meminfo"])
    memory.free -= planned
    memory.available -= planned
    freed = running_budget(s, model["name"], memory.total) if was_running else 0
    result = estimate(inputs["config"], inputs["weights"], inputs["source"], memory,
                      max_model_len=model["max_model_len"],
                      max_num_seqs=model["max_num_seqs"],
                      gpu_memory_utilization=model["gpu_memory_utilization"],
                      kv_cache_dtype=model["kv_cache_dtype"], freed_on_restart=freed)
    logger.info(f"    [{s.name}] fit of {model['name']}: {result.verdict} ({result.reason})")
    if result.verdict == "does not fit" and not model["skip_fit_check"]:
        raise refuse(s.name, model, result)
    if result.verdict == "fits after dropping caches":
        server.shell(name=f"Drop the page cache so {model['name']} fits",
                     commands=["sync", "echo 3 > /proc/sys/vm/drop_caches"])
    return int(model["gpu_memory_utilization"] * memory.total) - freed


def refuse(host_name: str, model: dict, result: Estimate) -> PyinfraError:
    return PyinfraError(
        f"host {host_name}: model {model['name']} ({model['model']}) does not fit, "
        f"no host was changed: {result.reason}. Figures in GiB: weights "
        f"{result.weights_gib}, KV cache per sequence {result.kv_one_sequence_gib}, "
        f"activations {result.activations_gib}, overhead {result.overhead_gib}, "
        f"budget {result.budget_gib}, free now {result.free_now_gib}, available "
        f"after dropping caches {result.available_now_gib}. If you know better, set "
        f"skip_fit_check: true on this model entry.")


def remove_stale_units(wanted_units: set) -> None:
    """Stop and delete units of models the inventory no longer lists."""
    for path in snapshot().files_matching(f"{UNIT_DIR}/{VLLM_UNIT_GLOB}"):
        unit = path.rsplit("/", 1)[-1]
        if unit in wanted_units:
            continue
        systemd.service(name=f"Stop {unit} (no longer in the inventory)", service=unit,
                        running=False, enabled=False)
        files.file(name=f"Remove {unit}", path=path, present=False)
        systemd.daemon_reload(name="Reload systemd units")
