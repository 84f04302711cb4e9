"""Load the documented defaults, layer each host's inventory data on top, validate.

Validation covers the whole inventory at once so that a mistake on any host stops the
deploy before any host is changed. Every error names the host, the setting, the value
and what would be accepted.
"""

from __future__ import annotations

import ipaddress
import re
from copy import deepcopy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pyinfra.api.exceptions import PyinfraError
from sparkstack_host.contract import Layout

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULTS_FILE = REPO_ROOT / "defaults.yaml"

ROLES = ("postgres", "vllm", "litellm", "openwebui")
KV_CACHE_DTYPES = ("auto", "fp8", "fp8_e4m3", "fp8_e5m2")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
HOSTNAME_RE = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                         r"(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$")
# Data keys that belong to pyinfra itself (connectors, global operation arguments).
PYINFRA_KEY_PREFIXES = ("ssh_", "winrm_", "docker_", "dockerssh_", "chroot_", "local_",
                        "podman_", "terraform_", "vagrant_", "_")
PROFILE_KEYS = {"local": list, "cloud": str}


class SettingsError(PyinfraError):
    """The inventory asks for something sparkstack cannot do; nothing was changed."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("invalid inventory, no host was changed:\n  - "
                         + "\n  - ".join(problems))


def load_defaults() -> dict[str, Any]:
    with open(DEFAULTS_FILE) as f:
        return yaml.safe_load(f)


@dataclass
class HostSettings:
    """One host's effective settings (defaults + inventory), validated."""

    name: str
    values: dict[str, Any]
    models: list[dict[str, Any]] = field(default_factory=list)

    def __getitem__(self, key: str) -> Any:
        return self.values[key]

    @property
    def roles(self) -> list[str]:
        return self.values["roles"]

    @property
    def address(self) -> str:
        return self.values["address"] or self.name

    def has(self, role: str) -> bool:
        return role in self.values["roles"]

    def swap_groups(self) -> dict[str, list[dict]]:
        """Each swap group on this host and its members, default (first listed) first."""
        groups: dict[str, list[dict]] = {}
        for m in self.models:
            if m["swap_group"]:
                groups.setdefault(m["swap_group"], []).append(m)
        return groups

    @property
    def layout(self) -> Layout:
        return Layout(self.values["install_root"], self.values["config_root"],
                      self.values["state_root"])


def _type_name(value: Any) -> str:
    return {bool: "true/false", int: "an integer", float: "a number", str: "a string",
            list: "a list", dict: "a mapping"}.get(type(value), type(value).__name__)


def _type_ok(value: Any, default: Any) -> bool:
    if isinstance(default, bool):
        return isinstance(value, bool)
    if isinstance(default, float):
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if isinstance(default, int):
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, type(default))


def _check_port(where: str, value: Any, problems: list[str]) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 65535:
        problems.append(f"{where} = {value!r}: a port must be an integer from 1 to 65535")


def _check_model(host: str, index: int, entry: Any, defaults: dict,
                 problems: list[str]) -> dict | None:
    where = f"host {host}: models[{index}]"
    if not isinstance(entry, dict):
        problems.append(f"{where} = {entry!r}: each model entry must be a mapping with "
                        "at least name, model and port")
        return None
    merged = {**deepcopy(defaults), **entry}
    allowed = set(defaults) | {"name", "model", "port"}
    for key in entry:
        if key not in allowed:
            problems.append(f"{where}.{key} = {entry[key]!r}: unknown model setting; "
                            f"accepted: {', '.join(sorted(allowed))}")
    label = entry.get("name", f"#{index}")
    where = f"host {host}: models[{index}] ({label})"
    name = entry.get("name")
    if not isinstance(name, str) or not NAME_RE.match(name):
        problems.append(f"{where}.name = {name!r}: every model needs a served name of "
                        "letters, digits, '.', '_' or '-' (at most 63 characters)")
    if not isinstance(entry.get("model"), str) or not entry.get("model"):
        problems.append(f"{where}.model = {entry.get('model')!r}: give a Hugging Face "
                        "repo id (e.g. Qwen/Qwen3-4B-Instruct-2507) or a local folder")
    if "port" not in entry:
        problems.append(f"{where}.port: missing; every model needs its own port "
                        "(1-65535)")
    else:
        _check_port(f"{where}.port", entry["port"], problems)
    for key, default in defaults.items():
        if key in entry and not _type_ok(entry[key], default):
            problems.append(f"{where}.{key} = {entry[key]!r}: must be {_type_name(default)}")
    gmu = merged.get("gpu_memory_utilization")
    if isinstance(gmu, (int, float)) and not 0 < gmu <= 0.95:
        problems.append(f"{where}.gpu_memory_utilization = {gmu!r}: must be above 0 and "
                        "at most 0.95 (the OS and other services share the memory)")
    for key in ("max_model_len", "max_num_seqs"):
        value = merged.get(key)
        if isinstance(value, int) and value < 1:
            problems.append(f"{where}.{key} = {value!r}: must be a positive integer")
    if merged.get("kv_cache_dtype") not in KV_CACHE_DTYPES:
        problems.append(f"{where}.kv_cache_dtype = {merged.get('kv_cache_dtype')!r}: "
                        f"accepted: {', '.join(KV_CACHE_DTYPES)}")
    group = merged.get("swap_group")
    if isinstance(group, str) and group and not NAME_RE.match(group):
        problems.append(f"{where}.swap_group = {group!r}: a swap group name is letters, "
                        "digits, '.', '_' or '-' (at most 63 characters), or empty")
    if isinstance(merged.get("extra_args"), list):
        for arg in merged["extra_args"]:
            if not isinstance(arg, str):
                problems.append(f"{where}.extra_args item {arg!r}: must be a string")
    return merged


def _check_host(name: str, data: dict[str, Any], defaults: dict[str, Any],
                problems: list[str]) -> HostSettings:
    values = deepcopy(defaults)
    start = len(problems)
    if not (HOSTNAME_RE.match(name) or _is_ip(name)) and not name.startswith("@"):
        problems.append(f"host {name!r}: not a valid host name or IP address; a host entry "
                        "is \"name\" or (\"name\", {settings})")
    for key, value in data.items():
        if key.startswith(PYINFRA_KEY_PREFIXES):
            continue
        if key not in defaults:
            close = [k for k in defaults if k.split("_")[0] == key.split("_")[0]]
            hint = f" (similar: {', '.join(close)})" if close else ""
            problems.append(f"host {name}: unknown setting {key} = {value!r}; every "
                            f"setting is listed in defaults.yaml{hint}")
            continue
        if not _type_ok(value, defaults[key]):
            problems.append(f"host {name}: {key} = {value!r}: must be "
                            f"{_type_name(defaults[key])} (default {defaults[key]!r})")
            continue
        values[key] = value
    if len(problems) > start:
        return HostSettings(name, values, [])

    roles = values["roles"]
    bad = [r for r in roles if r not in ROLES]
    if bad or not roles:
        problems.append(f"host {name}: roles = {roles!r}: accepted roles are "
                        f"{', '.join(ROLES)} (at least one)")
    for role in ("litellm", "openwebui"):
        if role in roles and "postgres" not in roles:
            problems.append(f"host {name}: roles = {roles!r}: {role} keeps its data in "
                            "the local PostgreSQL, so add postgres to this host's roles")
    if "openwebui" in roles and "litellm" not in roles:
        problems.append(f"host {name}: roles = {roles!r}: openwebui fronts the local "
                        "LiteLLM, so add litellm to this host's roles")
    for key in ("litellm_timeout", "litellm_num_retries", "litellm_cooldown_time",
                "vllm_start_timeout"):
        if values[key] < 0:
            problems.append(f"host {name}: {key} = {values[key]!r}: must not be negative")
    if not re.match(r"https?://[^/\s]+", values["hf_endpoint"]):
        problems.append(f"host {name}: hf_endpoint = {values['hf_endpoint']!r}: must be an "
                        "http:// or https:// URL, e.g. https://huggingface.co")
    if values["request_log_days"] < 1:
        problems.append(f"host {name}: request_log_days = {values['request_log_days']!r}: "
                        "must be at least 1 (day)")
    if values["litellm_routes_interval"] < 5:
        problems.append(f"host {name}: litellm_routes_interval = "
                        f"{values['litellm_routes_interval']!r}: must be at least 5 (seconds)")
    model_defaults = {**defaults["model_defaults"], **values["model_defaults"]}
    for key in values["model_defaults"]:
        if key not in defaults["model_defaults"]:
            problems.append(f"host {name}: model_defaults.{key}: unknown model setting; "
                            f"accepted: {', '.join(sorted(defaults['model_defaults']))}")
    models = []
    if "vllm" in roles:
        for i, entry in enumerate(values["models"]):
            merged = _check_model(name, i, entry, model_defaults, problems)
            if merged is not None:
                models.append(merged)
    _check_unique(name, models, problems)
    _check_ports(name, values, models, problems)
    for path in values["extra_ca_certificates"]:
        resolved = resolve_controller_path(path)
        if not isinstance(path, str) or not resolved.is_file():
            problems.append(f"host {name}: extra_ca_certificates item {path!r}: no such "
                            "file on the controller; give PEM certificate files")
    return HostSettings(name, values, models)


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
        return True
    except ValueError:
        return False


def _check_unique(host: str, models: list[dict], problems: list[str]) -> None:
    seen: dict[str, int] = {}
    for i, m in enumerate(models):
        if m.get("name") in seen:
            problems.append(f"host {host}: models[{i}].name = {m['name']!r}: already used "
                            f"by models[{seen[m['name']]}]; served names must be unique")
        seen.setdefault(m.get("name"), i)
    for i, m in enumerate(models):
        if m.get("swap_group") in seen:
            problems.append(f"host {host}: models[{i}].swap_group = {m['swap_group']!r}: "
                            "is also a served name on this host; profiles could not tell "
                            "them apart")


def _check_ports(host: str, values: dict, models: list[dict], problems: list[str]) -> None:
    owners: list[tuple[str, Any]] = []
    roles = values["roles"]
    for role, key in (("postgres", "postgres_port"), ("litellm", "litellm_port"),
                      ("openwebui", "openwebui_port")):
        _check_port(f"host {host}: {key}", values[key], problems)
        if role in roles:
            owners.append((key, values[key]))
    for i, m in enumerate(models):
        owners.append((f"models[{i}].port ({m.get('name')})", m.get("port")))
    seen: dict[Any, str] = {}
    for owner, port in owners:
        if port in seen:
            problems.append(f"host {host}: {owner} = {port!r}: clashes with "
                            f"{seen[port]} = {port!r}; each service on a host needs its "
                            "own port")
        else:
            seen[port] = owner


def _check_fleet(hosts: list[HostSettings], problems: list[str]) -> None:
    served = {name for h in hosts if h.has("vllm") for m in h.models
              for name in (m["name"], m["swap_group"]) if name}
    for h in hosts:
        if not h.has("litellm"):
            continue
        profiles = h["profiles"]
        for pname, profile in profiles.items():
            where = f"host {h.name}: profiles.{pname}"
            if not isinstance(pname, str) or not NAME_RE.match(pname):
                problems.append(f"{where}: a profile name must be letters, digits, '.', "
                                "'_' or '-'")
            if not isinstance(profile, dict):
                problems.append(f"{where} = {profile!r}: must be a mapping like "
                                "{local: [served names], cloud: 'openrouter/vendor/model'}")
                continue
            for key, value in profile.items():
                if key not in PROFILE_KEYS:
                    problems.append(f"{where}.{key}: unknown profile setting; accepted: "
                                    "local, cloud")
                elif not isinstance(value, PROFILE_KEYS[key]):
                    problems.append(f"{where}.{key} = {value!r}: must be "
                                    f"{_type_name(PROFILE_KEYS[key]())}")
            local = profile.get("local", [])
            if isinstance(local, list):
                for ref in local:
                    if ref not in served:
                        problems.append(
                            f"{where}.local = {local!r}: no host in the inventory serves "
                            f"a model or swap group named {ref!r}; served: "
                            f"{', '.join(sorted(served)) or 'none'}")
            if not local and not profile.get("cloud"):
                problems.append(f"{where} = {profile!r}: needs local models, a cloud "
                                "model, or both")
        for pattern, target in h["litellm_model_aliases"].items():
            if target not in profiles:
                problems.append(f"host {h.name}: litellm_model_aliases.{pattern} = "
                                f"{target!r}: no such profile; profiles: "
                                f"{', '.join(profiles)}")


def resolve_controller_path(path: str) -> Path:
    p = Path(path)
    return p if p.is_absolute() else REPO_ROOT / p


def validate_inventory(host_datas: dict[str, dict[str, Any]]) -> list[HostSettings]:
    """Validate every host's data; raise SettingsError listing every problem."""
    defaults = load_defaults()
    problems: list[str] = []
    hosts = [_check_host(name, data, defaults, problems) for name, data in host_datas.items()]
    if not problems:
        _check_fleet(hosts, problems)
    if problems:
        raise SettingsError(problems)
    return hosts
