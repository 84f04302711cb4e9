"""vLLM: one venv, one system user, one systemd unit per served model, each started
only after the memory-fit gate passed."""

from pyinfra import host, logger
from pyinfra.facts.files import FileContents, FindFiles
from pyinfra.facts.systemd import SystemdStatus
from pyinfra.operations import files, server, systemd

from checks.fit import Memory, estimate
from ..fitgate import ModelFitInputs, gpu_memory_utilization_of, refuse
from ..fleet import Fleet
from ..render import unit_name, vllm_args
from ..settings import HostSettings
from .base import install, loopback_for, prepare, run_unit, write_secrets, write_unit
from .checks import routes_command

UNIT_DIR = "/etc/systemd/system"


def requirements(s: HostSettings) -> str:
    lines = []
    if s["vllm_extra_index_url"]:
        lines.append(f"--extra-index-url {s['vllm_extra_index_url']}")
    lines.append(s["vllm_package"])
    return "\n".join(lines) + "\n"


def deploy(s: HostSettings, fleet: Fleet, secrets: dict) -> None:
    svc = prepare(s, "vllm", s["vllm_user"])
    for sub in ("cache", "cache/huggingface", "cache/vllm", "cache/triton"):
        files.directory(name=f"Create vLLM cache {sub}", path=f"{svc.state_dir}/{sub}",
                        user=svc.user, group=svc.user, mode="750")
    venv = install(svc, s["vllm_package"], requirements(s))
    # vLLM reads VLLM_API_KEY from its environment: the key never is on a command line.
    key = write_secrets(svc, "vLLM", {"VLLM_API_KEY": secrets["vllm_api_key"]})
    bind = fleet.vllm_bind_address(s)
    running = host.get_fact(SystemdStatus) or {}
    planned = 0  # memory of models this run starts before the next one
    wanted_units = set()
    for model in s.models:
        unit = f"{unit_name(model)}.service"
        wanted_units.add(unit)
        old_unit = host.get_fact(FileContents, path=f"{UNIT_DIR}/{unit}")
        unit_file = write_unit(svc, unit, "vllm/vllm-model.service.j2", model=model,
                               args=vllm_args(model, bind),
                               environment={**s["vllm_environment"], **model["environment"]},
                               health_host=loopback_for(bind),
                               routes_command=routes_command(s) if s.has("litellm") else "")
        restart_on = [venv, key]
        starts = (not running.get(unit) or unit_file.will_change
                  or any(op.will_change for op in restart_on))
        if starts:
            planned += fit_gate(s, model, svc.state_dir, old_unit, bool(running.get(unit)),
                                planned)
        run_unit(unit, f"Run {unit} (returns once the model answers)", unit_file,
                 restart_on)
    remove_stale_units(wanted_units)


def fit_gate(s: HostSettings, model: dict, state_dir: str, old_unit, was_running: bool,
             planned: int) -> int:
    """Refuse a model that does not fit (raises before any change); drop the page
    cache first when only that makes it fit. Returns the memory it will take."""
    inputs = host.get_fact(ModelFitInputs, model=model["model"],
                           hf_home=f"{state_dir}/cache/huggingface",
                           hub=s["hf_endpoint"] if s["fit_check_hub"] else None)
    if "unknown" in inputs:
        logger.warning(f"    [{s.name}] fit of {model['name']} not checked: {inputs['unknown']}")
        return 0
    memory = Memory.from_meminfo(inputs["meminfo"])
    memory.free -= planned
    memory.available -= planned
    freed = int(gpu_memory_utilization_of(old_unit) * memory.total) if was_running else 0
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


def remove_stale_units(wanted_units: set) -> None:
    """Stop and delete units of models the inventory no longer lists."""
    present = host.get_fact(FindFiles, path=UNIT_DIR, fname="sparkstack-vllm-*.service",
                            maxdepth=1) or []
    for path in present:
        unit = path.rsplit("/", 1)[-1]
        if unit in wanted_units:
            continue
        systemd.service(name=f"Stop {unit} (no longer in the inventory)", service=unit,
                        running=False, enabled=False)
        files.file(name=f"Remove {unit}", path=path, present=False)
        systemd.daemon_reload(name="Reload systemd units")
