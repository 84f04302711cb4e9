"""Pure functions from settings to the text of configuration files and command lines.

Kept free of pyinfra so that unit tests can render every file without a host.
"""

from __future__ import annotations

import os
import shlex
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, StrictUndefined

from .fleet import Fleet
from .settings import REPO_ROOT, HostSettings

TEMPLATES = REPO_ROOT / "templates"
_jinja = Environment(loader=FileSystemLoader(str(TEMPLATES)), undefined=StrictUndefined,
                     keep_trailing_newline=True, trim_blocks=True, lstrip_blocks=True)
_jinja.filters["shquote"] = shlex.quote


def template(name: str, **context) -> str:
    return _jinja.get_template(name).render(**context)


def unit_name(model: dict) -> str:
    return f"sparkstack-vllm-{model['name']}"


def vllm_args(model: dict, bind_address: str) -> list[str]:
    """The `vllm serve` command line for one model entry (the API key comes from the
    unit's environment file as VLLM_API_KEY, never from the command line)."""
    args = ["serve", model["model"], "--served-model-name", model["name"],
            "--host", bind_address, "--port", str(model["port"]),
            "--max-model-len", str(model["max_model_len"]),
            "--gpu-memory-utilization", str(model["gpu_memory_utilization"]),
            "--max-num-seqs", str(model["max_num_seqs"])]
    if model["revision"]:
        args += ["--revision", model["revision"]]
    if model["kv_cache_dtype"] != "auto":
        args += ["--kv-cache-dtype", model["kv_cache_dtype"]]
    if model["quantization"]:
        args += ["--quantization", model["quantization"]]
    if model["tool_call_parser"]:
        args += ["--enable-auto-tool-choice", "--tool-call-parser", model["tool_call_parser"]]
    if model["reasoning_parser"]:
        args += ["--reasoning-parser", model["reasoning_parser"]]
    if model["enable_prefix_caching"]:
        args += ["--enable-prefix-caching"]
    if model["load_format"]:
        args += ["--load-format", model["load_format"]]
    if model["trust_remote_code"]:
        args += ["--trust-remote-code"]
    return args + list(model["extra_args"])


def pip_conf(s: HostSettings) -> str:
    """pip configuration used for every sparkstack venv (not the system's pip)."""
    lines = ["[global]", "disable-pip-version-check = true", "no-input = true"]
    if s["pip_index_url"]:
        lines.append(f"index-url = {s['pip_index_url']}")
    if s["pip_extra_index_urls"]:
        lines.append("extra-index-url = " + " ".join(s["pip_extra_index_urls"]))
    if s["pip_find_links"]:
        lines.append("find-links = " + " ".join(s["pip_find_links"]))
    if s["extra_ca_certificates"]:
        lines.append("cert = /etc/ssl/certs/ca-certificates.crt")
    if s["https_proxy"] or s["http_proxy"]:
        lines.append(f"proxy = {s['https_proxy'] or s['http_proxy']}")
    lines.append(f"constraint = {s['install_root']}/pip-constraints.txt")
    return "\n".join(lines) + "\n"


def pip_constraints(s: HostSettings) -> str:
    return "".join(f"{line}\n" for line in s["pip_constraints"])


def proxy_environment(s: HostSettings, fleet: Fleet) -> dict[str, str]:
    """Proxy variables for services that call out (LiteLLM's cloud routes, pip)."""
    env: dict[str, str] = {}
    if s["http_proxy"]:
        env["HTTP_PROXY"] = env["http_proxy"] = s["http_proxy"]
    if s["https_proxy"]:
        env["HTTPS_PROXY"] = env["https_proxy"] = s["https_proxy"]
    if env:
        no_proxy = ",".join([s["no_proxy"], *fleet.addresses()])
        env["NO_PROXY"] = env["no_proxy"] = no_proxy
    if s["extra_ca_certificates"]:
        bundle = "/etc/ssl/certs/ca-certificates.crt"
        env.update(SSL_CERT_FILE=bundle, REQUESTS_CA_BUNDLE=bundle)
    return env


def cloud_api_key(s: HostSettings) -> str:
    return s["cloud_api_key"] or os.environ.get("OPENROUTER_API_KEY", "")


def litellm_routes(s: HostSettings, fleet: Fleet) -> dict:
    """The readiness gate's plan (checks/routes.py): LiteLLM's config with every local
    route, how to probe each route's backend, and each profile's cloud-only entry for
    while none of its local models is ready. Secrets are `os.environ/` references to
    the unit's 0600 environment file."""
    cloud_ok = bool(cloud_api_key(s))
    model_list: list[dict] = []
    fallbacks: list[dict] = []
    served_profiles: list[str] = []
    backends: dict[str, dict] = {}
    standby: dict[str, dict] = {}

    def local_entries(name: str, profile: dict) -> list[dict]:
        entries = []
        for served in profile.get("local", []):
            for b in fleet.backends_for(served, s):
                backends[b.id] = {"url": b.url, "served_name": served, "model": served,
                                  "max_model_len": b.max_model_len,
                                  "local": b.host == s.name}
                entries.append({
                    "model_name": name,
                    "litellm_params": {"model": f"hosted_vllm/{served}",
                                       "api_base": b.api_base,
                                       "api_key": "os.environ/VLLM_API_KEY"},
                    "model_info": {"id": f"{name}@{b.id}", "sparkstack_host": b.host,
                                   "sparkstack_backend": b.id},
                })
        return entries

    def cloud_entry(name: str, model: str) -> dict:
        return {"model_name": name,
                "litellm_params": {"model": model, "api_base": s["cloud_api_base"],
                                   "api_key": "os.environ/CLOUD_API_KEY"},
                "model_info": {"id": f"{name}@cloud"}}

    def add_profile(name: str, profile: dict, fallback_of: str | None = None) -> None:
        local = local_entries(name, profile)
        cloud = profile.get("cloud", "")
        fallback_group = f"{fallback_of or name}-cloud-fallback"
        if local:
            model_list.extend(local)
            if cloud and cloud_ok:
                if fallback_of is None:
                    model_list.append(cloud_entry(fallback_group, cloud))
                fallbacks.append({name: [fallback_group]})
                standby[name] = cloud_entry(name, cloud)
            served_profiles.append(name)
        elif cloud and cloud_ok:
            model_list.append(cloud_entry(name, cloud))
            served_profiles.append(name)

    for name, profile in s["profiles"].items():
        add_profile(name, profile)
    # Aliases (e.g. claude-*) get the target profile's backends and its fallback group.
    for alias, target in s["litellm_model_aliases"].items():
        if target in served_profiles:
            add_profile(alias, s["profiles"][target], fallback_of=target)

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
            "allowed_fails": 1,
            "fallbacks": fallbacks,
        },
        "litellm_settings": {"drop_params": True, "request_timeout": s["litellm_timeout"]},
        "general_settings": general,
    }
    return {"config": config, "backends": backends, "standby": standby,
            "litellm_unit": "sparkstack-litellm.service",
            "drain_timeout": s["litellm_timeout"]}


def litellm_config(s: HostSettings, fleet: Fleet) -> dict:
    """LiteLLM's config once every local model is ready."""
    return litellm_routes(s, fleet)["config"]


def env_file(values: dict[str, str]) -> str:
    """systemd EnvironmentFile text (values quoted so any character survives)."""
    out = ["# Rendered by sparkstack; root-only."]
    for key, value in values.items():
        escaped = str(value).replace("\\", "\\\\").replace('"', '\\"')
        out.append(f'{key}="{escaped}"')
    return "\n".join(out) + "\n"


def ca_file_name(path: str, index: int) -> str:
    return f"sparkstack-{index}-{Path(path).stem}.crt"
