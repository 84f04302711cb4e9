"""LiteLLM proxy: profiles, claude-* aliases, cloud fallbacks, load balancing, the
readiness gate that adds a local route only once its model is ready, and the front
door (`frontdoor`: nginx in front of several LiteLLM processes).

The deploy writes the gate's plan (`routes.json`, `contract.RoutesPlan`); the gate on
the host (`sparkstack-routes`) writes LiteLLM's config.yaml from it with the ready
routes only, and LiteLLM's launcher (`sparkstack-litellm-serve`, this package installed
into LiteLLM's venv) takes new routes in place.
"""

from __future__ import annotations

from io import StringIO

from pyinfra import host
from pyinfra.api import operation
from pyinfra.operations import server
from sparkstack_host.contract import (
    BACKEND_KEY,
    GATE,
    LITELLM_QUEUE_PATH,
    LITELLM_QUEUE_SOCKET,
    LITELLM_MIGRATE_UNIT,
    LITELLM_SERVE,
    LITELLM_TEMPLATE,
    ROUTES_TIMER,
    ROUTES_UNIT,
    UNIT_DIR,
    Backend,
    RoutesPlan,
    assemble_config,
    backend_host,
    local_routes,
    litellm_unit,
    litellm_units,
    local_url,
    read_config_text,
    render_auto_routes,
    render_config,
)

from ...fleet import Fleet
from ...host_facts import snapshot
from ...operations import put_file, unit_running
from ...render import proxy_environment, template
from ...settings import HostSettings
from ..base import (
    Deployment,
    ServiceInfo,
    host_package_alone,
    install,
    prepare,
    write_secrets,
    write_unit,
)
from ..postgres import database_url
from . import frontdoor


def cloud_api_key(s: HostSettings) -> str:
    """The setting, OPENROUTER_API_KEY or secrets_dir/cloud_api_key (settings.py)."""
    return s["cloud_api_key"]


def routes_plan(s: HostSettings, fleet: Fleet) -> RoutesPlan:
    """The readiness gate's plan: LiteLLM's config with every local route, and how to
    probe each route's backend. A profile's cloud model is a deployment of the profile
    itself with a lower priority (`order: 2`): LiteLLM turns to it only when the local
    ones fail, and the gate leaves it alone while none of them is ready. So clients see
    the profiles and nothing else: there is no internal fallback route to pick or call.
    Secrets are `os.environ/` references to the unit's 0600 environment file."""
    cloud_ok = bool(cloud_api_key(s))
    model_list: list[dict] = []
    backends: dict[str, Backend] = {}
    standby: dict[str, dict] = {}

    def local_entries(name: str, profile: dict) -> list[dict]:
        entries = []
        for local in profile.get("local", []):
            for r in fleet.replicas_of(local, s):
                backends[r.id] = Backend(url=r.url, served_name=r.served_name,
                                         max_model_len=r.max_model_len,
                                         local=r.host == s.name, swap_group=r.swap_group)
                entries.append({
                    "model_name": name,
                    "litellm_params": {"model": f"hosted_vllm/{r.served_name}",
                                       "api_base": r.api_base,
                                       "api_key": "os.environ/VLLM_API_KEY", "order": 1},
                    "model_info": {"id": f"{name}@{r.id}", "sparkstack_host": r.host,
                                   BACKEND_KEY: r.id, "sparkstack_route": "local",
                                   "sparkstack_served": f"{r.host}/{r.served_name}"},
                })
        return entries

    def cloud_entry(name: str, model: str, route: str, order: int) -> dict:
        # route: "fallback" for a local profile's cloud model, "cloud" for a cloud profile
        return {"model_name": name,
                "litellm_params": {"model": model, "api_base": s["cloud_api_base"],
                                   "api_key": "os.environ/CLOUD_API_KEY", "order": order},
                "model_info": {"id": f"{name}@cloud", "sparkstack_route": route,
                               "sparkstack_served": model}}

    def add_profile(name: str, profile: dict) -> bool:
        local = local_entries(name, profile)
        cloud = profile.get("cloud", "") if cloud_ok else ""
        model_list.extend(local)
        if local and cloud:
            standby[name] = cloud_entry(name, cloud, "fallback", 2)
            model_list.append(standby[name])
        elif cloud:
            model_list.append(cloud_entry(name, cloud, "cloud", 1))
        return bool(local or cloud)

    def serving(profile: dict) -> dict:
        """An auto profile is served as its default profile is: a request it does not
        re-route (none should reach it) still gets an answer."""
        return s["profiles"][profile["routes"]["default"]] if "routes" in profile else profile

    served = [name for name, profile in s["profiles"].items()
              if add_profile(name, serving(profile))]
    # Aliases (e.g. claude-*) are served as their profile is, under their own name.
    for alias, target in s["litellm_model_aliases"].items():
        if target in served:
            add_profile(alias, serving(s["profiles"][target]))

    general = {"master_key": "os.environ/LITELLM_MASTER_KEY"}
    if s["litellm_request_log"]:
        general["database_url"] = "os.environ/DATABASE_URL"
    else:
        general["disable_spend_logs"] = True
    config = {
        "model_list": model_list,
        "router_settings": {
            "routing_strategy": "simple-shuffle",
            "num_retries": s["litellm_num_retries"],
            "timeout": s["litellm_timeout"],
            "cooldown_time": s["litellm_cooldown_time"],
            # a backend that fails (refused, 5xx; not a client's 4xx) rests at once, so
            # the request's retry goes to the profile's cloud model: with one failure
            # allowed, the first request after an engine died retried the dead engine
            # and failed
            "allowed_fails": 0,
            "enable_pre_call_checks": True,  # what makes LiteLLM honour `order`
        },
        "litellm_settings": {"drop_params": True, "request_timeout": s["litellm_timeout"],
                             # from the host package (on PYTHONPATH): only served names
                             # may be asked for; sparkstack's request log
                             "callbacks": ([AUTO_ROUTER] if has_auto(s) else [])
                             + ["sparkstack_host.model_guard.guard"] + (
                                 ["sparkstack_host.request_log.logger"]
                                 if s["request_log"] else [])},
        "general_settings": general,
    }
    return RoutesPlan(config=config, backends=backends, standby=standby,
                      drain_timeout=s["litellm_timeout"], processes=s["litellm_processes"])


AUTO_ROUTER = "sparkstack_host.auto_route.router"  # before the guard: it renames "auto"


def has_auto(s: HostSettings) -> bool:
    return len(s.serving_profiles()) < len(s["profiles"])


def auto_routes(s: HostSettings, fleet: Fleet) -> dict[str, dict]:
    """The auto profiles as the router in LiteLLM's process reads them (contract's
    auto-routes.json): the names it answers to, the profiles hints may pick, the rules,
    and where this host's classifier model answers."""
    bind = fleet.vllm_bind_address(s) if s.has("vllm") else "127.0.0.1"
    ports = {m["name"]: m["port"] for m in s.models}
    serving = s.serving_profiles()
    out = {}
    for name, profile in s["profiles"].items():
        if "routes" not in profile:
            continue
        routes = profile["routes"]
        entry = {"names": [name] + [a for a, target in s["litellm_model_aliases"].items()
                                    if target == name],
                 "default": routes["default"],
                 "hints": serving if routes.get("hints", True) else [],
                 "rules": routes.get("rules", []), "classifier": None}
        if c := routes.get("classifier"):
            entry["classifier"] = {
                "url": f"{local_url(bind, ports[c['model']])}/v1/chat/completions",
                "model": c["model"], "labels": c["labels"],
                "budget_ms": c.get("budget_ms", 300),
                "min_confidence": c.get("min_confidence", 0.0)}
        out[name] = entry
    return out


def settings_changed(old_plan: str | None, new: RoutesPlan) -> bool:
    """Does the plan change more than LiteLLM's routes (its model list and fallbacks,
    which its launcher swaps in place)? Router and proxy settings need a restart."""
    def settings(config: dict) -> dict:
        rest = {k: v for k, v in config.items() if k != "model_list"}
        rest["router_settings"] = {k: v for k, v in rest.get("router_settings", {}).items()
                                   if k != "fallbacks"}
        return rest
    if old_plan is None:  # a first deploy: LiteLLM starts anyway
        return False
    try:
        old = RoutesPlan.from_json(old_plan)
    except (ValueError, KeyError, TypeError):  # written by an older sparkstack
        return True
    return settings(old.config) != settings(new.config)


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
    if s["request_log"]:
        env["SPARKSTACK_REQUEST_LOG_DSN"] = database_url(s, secrets, "litellm")
    env.update(proxy_environment(s, fleet))
    return env


PSYCOPG = "psycopg[binary]==3.2.10"  # the request log's PostgreSQL driver
PRISMA = "prisma==0.15.0"             # what LiteLLM's own database goes through
# uvicorn's C HTTP parser: without it uvicorn parses every request in Python
HTTPTOOLS = "httptools==0.9.0"


def requirements(s: HostSettings) -> str:
    reqs = f"litellm[proxy]=={s['litellm_version']}\n{HTTPTOOLS}\n"
    if s["request_log"]:
        reqs += f"{PSYCOPG}\n"
    if s["litellm_request_log"]:
        reqs += f"{PRISMA}\n"
    return reqs


def url(s: HostSettings) -> str:
    """Where clients on this host reach LiteLLM (Open WebUI, the health checks)."""
    return local_url(s["litellm_bind_address"], s["litellm_port"])


def deploy(d: Deployment) -> None:
    s, fleet, secrets = d.s, d.fleet, d.secrets
    svc = prepare(s, "litellm", s["litellm_user"])
    layout = s.layout
    venv = install(svc, f"LiteLLM {s['litellm_version']}", requirements(s))
    # its launcher runs in LiteLLM's process: a changed host package restarts LiteLLM
    host_lib, launcher = host_package_alone(s)
    wanted = routes_plan(s, fleet)
    plan = put_file(name="Write LiteLLM's routes (profiles, aliases, fallbacks)",
                    src=StringIO(wanted.to_json()),
                    dest=layout.routes_plan, user="root", group=svc.user, mode="640")
    env = write_secrets(svc, "LiteLLM", secret_environment(s, fleet, secrets))
    # the auto profiles' routes: read by LiteLLM at its start (a change restarts it)
    auto = put_file(name="Write the auto profiles' routes",
                    src=StringIO(render_auto_routes(auto_routes(s, fleet))),
                    dest=layout.auto_routes, user="root", group=svc.user, mode="640")
    gate = layout.host_program(GATE)
    unit_file = write_unit(svc, LITELLM_TEMPLATE, "litellm/litellm@.service.j2", gate=gate,
                           serve=f"{svc.venv}/bin/python -m {LITELLM_SERVE}",
                           host_lib=host_lib, **frontdoor.process_unit_context(s))
    socket_file = put_file(name=f"Write unit {LITELLM_QUEUE_SOCKET}",
                           src=StringIO(template("litellm/litellm-queue.socket.j2", s=s,
                                                 queue_path=LITELLM_QUEUE_PATH,
                                                 first_unit=litellm_unit(1))),
                           dest=f"{UNIT_DIR}/{LITELLM_QUEUE_SOCKET}", mode="644")
    migrate_file = write_unit(svc, LITELLM_MIGRATE_UNIT, "litellm/litellm-migrate.service.j2",
                              gate=gate)
    restart = (settings_changed(snapshot().content(layout.routes_plan), wanted)
               or any(op.will_change for op in (venv, launcher, env, auto, unit_file)))
    frontdoor.deploy(svc, restart, unit_file, socket_file, migrate_file, venv)
    # LiteLLM reads config.yaml, which the gate writes from the plan: new routes are
    # taken in place (systemctl reload); other settings restarted it above
    server.shell(name="Take the new routes plan in place", _if=plan.did_change,
                 commands=[f"{gate} --config-root {layout.config_root} --apply"])
    routes_unit = write_unit(svc, ROUTES_UNIT, "litellm/litellm-routes.service.j2",
                             gate=gate,
                             litellm_unit=" ".join(litellm_units(s["litellm_processes"])))
    timer_file = put_file(name=f"Write unit {ROUTES_TIMER}",
                          src=StringIO(template("litellm/litellm-routes.timer.j2", s=s)),
                          dest=f"{UNIT_DIR}/{ROUTES_TIMER}", mode="644")
    unit_running(name="Re-check routes on a timer", unit=ROUTES_TIMER,
                 daemon_reload=routes_unit.will_change or timer_file.will_change,
                 restarted=timer_file.will_change)


def routes_complete(plan: RoutesPlan, config_text: str | None) -> bool:
    """Does LiteLLM's config route what a deploy should leave routed: every backend
    outside a swap group, a member of each swap group (the others stand by), and all of
    it as the current plan says?"""
    config = read_config_text(config_text or "")
    routed = {bid for _, bid in local_routes(config)}
    groups: dict[tuple[str, str], set[str]] = {}
    for bid, b in plan.backends.items():
        if b.swap_group:
            groups.setdefault((backend_host(bid), b.swap_group), set()).add(bid)
    alone = {bid for bid, b in plan.backends.items() if not b.swap_group}
    return (alone <= routed and all(members & routed for members in groups.values())
            and render_config(assemble_config(plan, routed)) == config_text)


@operation()
def routes_current(plan: RoutesPlan, config: str, command: str):
    """Run the readiness gate unless LiteLLM's config already routes what it should;
    the gate itself decides what is ready when it runs."""
    if routes_complete(plan, snapshot().content(config)):
        host.noop("LiteLLM routes to every model that should run")
        return
    yield command


def route_ready_models(d: Deployment) -> None:
    """Last step of a deploy: once the models (on every Spark) had their chance to
    become ready, add their routes, and let models on other Sparks that a run left
    drained back in. Nothing to do when LiteLLM already routes to all."""
    s, fleet = d.s, d.fleet
    layout = s.layout
    routes_current(name="Route profiles to the models that are ready",
                   plan=routes_plan(s, fleet), config=layout.litellm_config,
                   command=f"{layout.host_program(GATE)} --config-root "
                           f"{layout.config_root} --undrain-remote --apply")


SERVICE = ServiceInfo(role="litellm", label="LiteLLM", deploy=deploy,
                      requirements=requirements, units=frontdoor.units,
                      bind_setting="litellm_bind_address", database="litellm",
                      finish=route_ready_models)
