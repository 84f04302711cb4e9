"""LiteLLM proxy: profiles, claude-* aliases, cloud fallbacks, load balancing, and the
readiness gate that adds a local route only once its model is ready."""

import json
from io import StringIO

from pyinfra.operations import files, server

from checks.routes import assemble, render
from ..fleet import Fleet
from ..operations import routes_current, unit_running
from ..render import cloud_api_key, litellm_routes, proxy_environment, template
from ..settings import REPO_ROOT, HostSettings
from .base import Service, install, loopback_for, prepare, run_unit, write_secrets, write_unit
from .checks import routes_command
from .postgres import database_url

UNIT = "sparkstack-litellm.service"
SOCKET = "sparkstack-litellm.socket"


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


def plan_path(svc: Service) -> str:
    return f"{svc.conf_dir}/routes.json"


def deploy(s: HostSettings, fleet: Fleet, secrets: dict) -> None:
    svc = prepare(s, "litellm", s["litellm_user"])
    reqs = f"litellm[proxy]=={s['litellm_version']}\n"
    if s["litellm_request_log"]:
        reqs += "prisma\n"  # LiteLLM's request log in Postgres goes through Prisma
    venv = install(svc, f"LiteLLM {s['litellm_version']}", reqs)
    serve = files.put(name="Install LiteLLM's socket-activated launcher",
                      src=str(REPO_ROOT / "files" / "litellm-serve"),
                      dest=f"{s['install_root']}/bin/litellm-serve", mode="755")
    # The plan: every local route; the gate (checks/routes.py) writes config.yaml from it.
    plan = files.put(name="Write LiteLLM's routes (profiles, aliases, fallbacks)",
                     src=StringIO(json.dumps(litellm_routes(s, fleet), indent=1,
                                             sort_keys=True) + "\n"),
                     dest=plan_path(svc), user="root", group=svc.user, mode="640")
    env = write_secrets(svc, "LiteLLM", secret_environment(s, fleet, secrets))
    socket_file = files.put(name=f"Write unit {SOCKET}",
                            src=StringIO(template("litellm/litellm.socket.j2", s=s)),
                            dest=f"/etc/systemd/system/{SOCKET}", mode="644")
    unit_file = write_unit(svc, UNIT, "litellm/litellm.service.j2",
                           config=f"{svc.conf_dir}/config.yaml",
                           routes_command=routes_command(s),
                           serve_script=f"{s['install_root']}/bin/litellm-serve",
                           health_host=loopback_for(s["litellm_bind_address"]))
    if socket_file.will_change:
        # the socket takes over the port from a running LiteLLM (or moves it)
        server.shell(name=f"Stop {UNIT} while its socket changes",
                     commands=[f"systemctl stop {UNIT}"])
    unit_running(name="Listen on LiteLLM's socket", unit=SOCKET,
                 daemon_reload=socket_file.will_change, restarted=socket_file.will_change)
    run_unit(UNIT, "Run LiteLLM", unit_file,
             [venv, serve, plan, env, socket_file])
    routes_unit = write_unit(svc, "sparkstack-litellm-routes.service",
                       "litellm/litellm-routes.service.j2", routes_command=routes_command(s))
    timer_file = files.put(name="Write unit sparkstack-litellm-routes.timer",
                           src=StringIO(template("litellm/litellm-routes.timer.j2", s=s)),
                           dest="/etc/systemd/system/sparkstack-litellm-routes.timer",
                           mode="644")
    unit_running(name="Re-check routes on a timer", unit="sparkstack-litellm-routes.timer",
                 daemon_reload=routes_unit.will_change or timer_file.will_change,
                 restarted=timer_file.will_change)


def route_ready_models(s: HostSettings, fleet: Fleet) -> None:
    """Last step of a deploy: once the models (on every Spark) had their chance to
    become ready, add their routes. Nothing to do when LiteLLM already routes to all."""
    svc = Service("litellm", s["litellm_user"], s)
    plan = litellm_routes(s, fleet)
    routes_current(name="Route profiles to the models that are ready",
                   config=f"{svc.conf_dir}/config.yaml",
                   wanted=render(assemble(plan, set(plan["backends"]))),
                   command=f"{routes_command(s)} --apply")
