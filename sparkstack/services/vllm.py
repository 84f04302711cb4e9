"""vLLM: one venv, one system user, one systemd unit per served model."""

from io import StringIO

from pyinfra import host
from pyinfra.facts.files import FindFiles
from pyinfra.operations import files, systemd

from ..fleet import Fleet
from ..operations import venv_install
from ..render import env_file, template, unit_name, vllm_args
from ..settings import HostSettings
from .base import service_user

UNIT_DIR = "/etc/systemd/system"


def requirements(s: HostSettings) -> str:
    lines = []
    if s["vllm_extra_index_url"]:
        lines.append(f"--extra-index-url {s['vllm_extra_index_url']}")
    lines.append(s["vllm_package"])
    return "\n".join(lines) + "\n"


def deploy(s: HostSettings, fleet: Fleet, secrets: dict) -> None:
    user = s["vllm_user"]
    state_dir = f"{s['state_root']}/vllm"
    venv = f"{s['install_root']}/vllm/venv"
    service_user(user, state_dir)
    for sub in ("cache", "cache/huggingface", "cache/vllm", "cache/triton"):
        files.directory(name=f"Create vLLM cache {sub}", path=f"{state_dir}/{sub}",
                        user=user, group=user, mode="750")
    install = venv_install(name=f"Install {s['vllm_package']}", venv=venv,
                           requirements=requirements(s),
                           pip_conf=f"{s['install_root']}/pip.conf",
                           constraints="\n".join(s["pip_constraints"]))
    secrets_env = f"{s['config_root']}/vllm/secrets.env"
    key_file = files.put(name="Write vLLM's API key (root-only)",
                         src=StringIO(env_file({"VLLM_API_KEY": secrets["vllm_api_key"]})),
                         dest=secrets_env, user="root", group="root", mode="600")

    bind = fleet.vllm_bind_address(s)
    wanted_units = set()
    for model in s.models:
        name = unit_name(model)
        wanted_units.add(f"{name}.service")
        unit = files.put(
            name=f"Write unit {name}",
            src=StringIO(template(
                "vllm/vllm-model.service.j2", s=s, model=model, state_dir=state_dir,
                venv=venv, secrets_env=secrets_env,
                environment={**s["vllm_environment"], **model["environment"]},
                args=vllm_args(model, bind),
                health_host="127.0.0.1" if bind in ("127.0.0.1", "0.0.0.0") else bind,
                wait_script=f"{s['install_root']}/bin/wait-http-ready")),
            dest=f"{UNIT_DIR}/{name}.service", mode="644")
        systemd.service(name=f"Run {name} (returns once the model answers)",
                        service=f"{name}.service", running=True, enabled=True,
                        daemon_reload=unit.will_change,
                        restarted=unit.will_change or install.will_change
                        or key_file.will_change)
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
