"""LiteLLM proxy: profiles, claude-* aliases, cloud fallbacks, load balancing."""

from io import StringIO

from pyinfra.operations import files

from ..fleet import Fleet
from ..render import cloud_api_key, litellm_config_yaml, proxy_environment
from ..settings import HostSettings
from .base import activate, install, loopback_for, prepare, write_secrets
from .postgres import database_url


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
    svc = prepare(s, "litellm", s["litellm_user"])
    reqs = f"litellm[proxy]=={s['litellm_version']}\n"
    if s["litellm_request_log"]:
        reqs += "prisma\n"  # LiteLLM's request log in Postgres goes through Prisma
    venv = install(svc, f"LiteLLM {s['litellm_version']}", reqs)
    config_path = f"{svc.conf_dir}/config.yaml"
    config = files.put(name="Write LiteLLM config.yaml (profiles, aliases, fallbacks)",
                       src=StringIO(litellm_config_yaml(s, fleet)), dest=config_path,
                       user="root", group=svc.user, mode="640")
    env = write_secrets(svc, "LiteLLM", secret_environment(s, fleet, secrets))
    activate(svc, "sparkstack-litellm.service", "litellm/litellm.service.j2",
             "Run LiteLLM", restart_on=[venv, config, env], config=config_path,
             health_host=loopback_for(s["litellm_bind_address"]))
