"""Open WebUI fronting LiteLLM, its data in Postgres, offline-safe settings."""

from sparkstack_host.contract import LITELLM_UNIT, OPENWEBUI_UNIT, local_url

from ..fleet import Fleet
from ..operations import ensure_dir
from ..render import proxy_environment
from ..settings import HostSettings
from . import litellm
from .base import activate, install, prepare, write_secrets
from .postgres import database_url


def requirements(s: HostSettings) -> str:
    # the [postgres] extra brings psycopg2, which Open WebUI's Postgres engine needs
    return f"open-webui[postgres]=={s['openwebui_version']}\n"


def deploy(s: HostSettings, fleet: Fleet, secrets: dict) -> None:
    svc = prepare(s, "openwebui", s["openwebui_user"])
    ensure_dir(name="Create Open WebUI's data folder", path=f"{svc.state_dir}/data",
               user=svc.user, group=svc.user, mode="750")
    venv = install(svc, f"Open WebUI {s['openwebui_version']}", requirements(s))
    env = write_secrets(svc, "Open WebUI", {
        "WEBUI_SECRET_KEY": secrets["openwebui_secret_key"],
        "DATABASE_URL": database_url(s, secrets, "openwebui"),
        # Open WebUI talks to LiteLLM with the master key (chat and embeddings).
        "OPENAI_API_KEY": secrets["litellm_master_key"],
        "RAG_OPENAI_API_KEY": secrets["litellm_master_key"],
        **proxy_environment(s, fleet),
    })
    health = local_url(s["openwebui_bind_address"], s["openwebui_port"])
    activate(svc, OPENWEBUI_UNIT, "openwebui/openwebui.service.j2", "Run Open WebUI",
             restart_on=[venv, env], litellm_url=litellm.url(s),
             litellm_unit=LITELLM_UNIT, health_url=f"{health}/health")
