"""LiteLLM proxy: profiles, claude-* aliases, cloud fallbacks, load balancing."""

from io import StringIO

from pyinfra.operations import files, systemd

from ..fleet import Fleet
from ..operations import venv_install
from ..render import cloud_api_key, env_file, litellm_config_yaml, proxy_environment, template
from ..settings import HostSettings
from .base import service_user
from .postgres import database_url

UNIT = "sparkstack-litellm.service"


def secret_environment(s: HostSettings, fleet: Fleet, secrets: dict) -> dict[str, str]:
    env = {
        "LITELLM_MASTER_KEY": secrets["litellm_master_key"],
        "LITELLM_SALT_KEY": secrets["litellm_salt_key"],
        "UI_PASSWORD": secrets["litellm_ui_password"],
        "VLLM_API_KEY": secrets["vllm_api_key"],
    }
    if cloud_api_key(s):
        env["CLOUD_API_KEY"] = cloud_api_key(s)
    if s["litellm_request_log"]:
        env["DATABASE_URL"] = database_url(s, secrets, "litellm")
    env.update(proxy_environment(s, fleet))
    return env


def deploy(s: HostSettings, fleet: Fleet, secrets: dict) -> None:
    user = s["litellm_user"]
    state_dir = f"{s['state_root']}/litellm"
    venv = f"{s['install_root']}/litellm/venv"
    conf_dir = f"{s['config_root']}/litellm"
    service_user(user, state_dir)
    reqs = f"litellm[proxy]=={s['litellm_version']}\n"
    if s["litellm_request_log"]:
        reqs += "prisma\n"  # LiteLLM's request log in Postgres goes through Prisma
    install = venv_install(name=f"Install LiteLLM {s['litellm_version']}", venv=venv,
                           requirements=reqs, pip_conf=f"{s['install_root']}/pip.conf",
                           constraints="\n".join(s["pip_constraints"]))
    config = files.put(name="Write LiteLLM config.yaml (profiles, aliases, fallbacks)",
                       src=StringIO(litellm_config_yaml(s, fleet)),
                       dest=f"{conf_dir}/config.yaml", user="root", group=user, mode="640")
    env = files.put(name="Write LiteLLM secrets (root-only)",
                    src=StringIO(env_file(secret_environment(s, fleet, secrets))),
                    dest=f"{conf_dir}/secrets.env", user="root", group="root", mode="600")
    unit = files.put(name=f"Write unit {UNIT}",
                     src=StringIO(template(
                         "litellm/litellm.service.j2", s=s, venv=venv, state_dir=state_dir,
                         config=f"{conf_dir}/config.yaml", secrets_env=f"{conf_dir}/secrets.env",
                         health_host=_local(s["litellm_bind_address"]),
                         wait_script=f"{s['install_root']}/bin/wait-http-ready")),
                     dest=f"/etc/systemd/system/{UNIT}", mode="644")
    systemd.service(name="Run LiteLLM", service=UNIT, running=True, enabled=True,
                    daemon_reload=unit.will_change,
                    restarted=unit.will_change or config.will_change or env.will_change
                    or install.will_change)


def _local(bind: str) -> str:
    return "127.0.0.1" if bind in ("0.0.0.0", "127.0.0.1") else bind
