"""Open WebUI fronting LiteLLM, its data in Postgres, offline-safe settings, and the
profiles' display names and descriptions in its model picker."""

import hashlib
import json
from io import StringIO

from pyinfra import host
from pyinfra.api import operation
from sparkstack_host.contract import FRONTDOOR_UNIT, OPENWEBUI_UNIT, local_url

from ..host_facts import snapshot
from ..operations import ensure_dir, put_file
from ..render import proxy_environment
from ..settings import HostSettings
from . import litellm
from .base import Deployment, ServiceInfo, activate, install, prepare, write_secrets
from .postgres import database_url


def requirements(s: HostSettings) -> str:
    # the [postgres] extra brings psycopg2, which Open WebUI's Postgres engine needs
    return f"open-webui[postgres]=={s['openwebui_version']}\n"


def deploy(d: Deployment) -> None:
    s, fleet, secrets = d.s, d.fleet, d.secrets
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
        # Open WebUI makes this admin at its first start, before it listens, and turns
        # sign-up off: nobody who reaches it first can make themselves its admin.
        "WEBUI_ADMIN_EMAIL": s["openwebui_admin_email"],
        "WEBUI_ADMIN_PASSWORD": secrets["openwebui_admin_password"],
        **proxy_environment(s, fleet),
    })
    health = local_url(s["openwebui_bind_address"], s["openwebui_port"])
    activate(svc, OPENWEBUI_UNIT, "openwebui/openwebui.service.j2", "Run Open WebUI",
             restart_on=[venv, env], litellm_url=litellm.url(s),
             litellm_unit=FRONTDOOR_UNIT, health_url=f"{health}/health")
    sql_file, wanted = f"{svc.conf_dir}/picker.sql", picker_sql(s)
    put_file(name="Write the profiles' names for Open WebUI's picker",
             src=StringIO(wanted), dest=sql_file, mode="644")
    picker_entries(name="Name the profiles in Open WebUI's picker", sql_file=sql_file,
                   wanted=wanted)


OWNER = "sparkstack"   # marks the picker entries the deploy owns; a person's are left alone


def sql_text(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def picker_sql(s: HostSettings) -> str:
    """Open WebUI's own entries for the profiles that have a title or a description:
    an entry with a LiteLLM model's id and no base model names that model in the
    picker. Entries the deploy made for profiles that lost them are removed."""
    named = {name: p for name, p in s["profiles"].items()
             if p.get("title") or p.get("description")}
    keep = ", ".join(sql_text(n) for n in named) or "''"
    lines = ["-- Rendered by sparkstack: the profiles' names in Open WebUI's model picker.",
             "\\set ON_ERROR_STOP on", "BEGIN;",
             f"DELETE FROM model WHERE user_id = '{OWNER}' AND id NOT IN ({keep});"]
    for name, p in named.items():
        meta = json.dumps({"description": p.get("description", ""),
                           "profile_image_url": "/static/favicon.png"})
        lines.append(
            "INSERT INTO model (id, user_id, base_model_id, name, params, meta, is_active, "
            "created_at, updated_at) VALUES "
            f"({sql_text(name)}, '{OWNER}', NULL, {sql_text(p.get('title') or name)}, "
            f"'{{}}', {sql_text(meta)}, true, extract(epoch from now())::bigint, "
            "extract(epoch from now())::bigint) ON CONFLICT (id) DO UPDATE SET "
            "name = EXCLUDED.name, meta = EXCLUDED.meta, is_active = true, "
            f"updated_at = EXCLUDED.updated_at WHERE model.user_id = '{OWNER}';")
    lines.append("COMMIT;")
    return "\n".join(lines) + "\n"


@operation()
def picker_entries(sql_file: str, wanted: str):
    """Apply the picker's entries unless exactly these were applied (recorded only once
    psql succeeded, so a failed run tries again). Open WebUI has made its tables by
    then: this runs once it answers."""
    applied = snapshot().file(f"{sql_file}.applied") or {}
    if applied.get("sha256") == hashlib.sha256(wanted.encode()).hexdigest():
        host.noop("Open WebUI's picker names the profiles")
        return
    yield (f"cd / && runuser -u postgres -- psql -X -q -d openwebui -f {sql_file} && "
           f"cp {sql_file} {sql_file}.applied")


SERVICE = ServiceInfo(role="openwebui", label="Open WebUI", deploy=deploy,
                      requirements=requirements, units=lambda s: [OPENWEBUI_UNIT],
                      bind_setting="openwebui_bind_address", database="openwebui")
