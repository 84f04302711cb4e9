"""Open WebUI fronting LiteLLM, its data in Postgres, offline-safe settings."""

from io import StringIO

from pyinfra.operations import files, systemd

from ..fleet import Fleet
from ..operations import venv_install
from ..render import env_file, proxy_environment, template
from ..settings import HostSettings
from .base import service_user
from .litellm import _local
from .postgres import database_url

UNIT = "sparkstack-openwebui.service"


def deploy(s: HostSettings, fleet: Fleet, secrets: dict) -> None:
    user = s["openwebui_user"]
    state_dir = f"{s['state_root']}/openwebui"
    venv = f"{s['install_root']}/openwebui/venv"
    conf_dir = f"{s['config_root']}/openwebui"
    service_user(user, state_dir)
    files.directory(name="Create Open WebUI's data folder", path=f"{state_dir}/data",
                    user=user, group=user, mode="750")
    install = venv_install(name=f"Install Open WebUI {s['openwebui_version']}", venv=venv,
                           requirements=f"open-webui[postgres]=={s['openwebui_version']}\n",
                           pip_conf=f"{s['install_root']}/pip.conf",
                           constraints="\n".join(s["pip_constraints"]))
    environment = {
        "WEBUI_SECRET_KEY": secrets["openwebui_secret_key"],
        "DATABASE_URL": database_url(s, secrets, "openwebui"),
        # Open WebUI talks to LiteLLM with the master key (chat and embeddings).
        "OPENAI_API_KEY": secrets["litellm_master_key"],
        "RAG_OPENAI_API_KEY": secrets["litellm_master_key"],
        **proxy_environment(s, fleet),
    }
    env = files.put(name="Write Open WebUI secrets (root-only)",
                    src=StringIO(env_file(environment)), dest=f"{conf_dir}/secrets.env",
                    user="root", group="root", mode="600")
    unit = files.put(name=f"Write unit {UNIT}",
                     src=StringIO(template(
                         "openwebui/openwebui.service.j2", s=s, venv=venv,
                         state_dir=state_dir, secrets_env=f"{conf_dir}/secrets.env",
                         health_host=_local(s["openwebui_bind_address"]),
                         wait_script=f"{s['install_root']}/bin/wait-http-ready")),
                     dest=f"/etc/systemd/system/{UNIT}", mode="644")
    systemd.service(name="Run Open WebUI", service=UNIT, running=True, enabled=True,
                    daemon_reload=unit.will_change,
                    restarted=unit.will_change or env.will_change or install.will_change)
