"""vLLM: one venv, one system user, one systemd unit per served model."""

from pyinfra import host
from pyinfra.facts.files import FindFiles
from pyinfra.operations import files, systemd

from ..fleet import Fleet
from ..render import unit_name, vllm_args
from ..settings import HostSettings
from .base import activate, install, loopback_for, prepare, write_secrets

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
    wanted_units = set()
    for model in s.models:
        unit = f"{unit_name(model)}.service"
        wanted_units.add(unit)
        activate(svc, unit, "vllm/vllm-model.service.j2",
                 f"Run {unit} (returns once the model answers)", restart_on=[venv, key],
                 model=model, args=vllm_args(model, bind),
                 environment={**s["vllm_environment"], **model["environment"]},
                 health_host=loopback_for(bind))
    remove_stale_units(wanted_units)


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
