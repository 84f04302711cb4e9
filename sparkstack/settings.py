"""Load the documented defaults, layer each host's inventory data on top, validate.

Validation covers the whole inventory at once so that a mistake on any host stops the
deploy before any host is changed. Every error names the host, the setting, the value
and what would be accepted.
"""

from __future__ import annotations

import fnmatch
import os
import urllib.parse
from copy import deepcopy
from dataclasses import dataclass, field
from typing import Any

import yaml
from pyinfra.api.exceptions import PyinfraError
from sparkstack_host.contract import Layout

from .project import DEFAULTS_FILE, controller_path
from .rules import MODEL_RULES, NAME, ROLES, RULES, Rule, controls, host_or_address

PEM_CERTIFICATE = b"-----BEGIN CERTIFICATE-----"
# Data keys that belong to pyinfra itself (connectors, global operation arguments).
PYINFRA_KEY_PREFIXES = ("ssh_", "winrm_", "docker_", "dockerssh_", "chroot_", "local_",
                        "podman_", "terraform_", "vagrant_", "_")


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
    given: frozenset[str] = frozenset()   # the settings the inventory sets (not defaults)

    def __getitem__(self, key: str) -> Any:
        return self.values[key]

    @property
    def roles(self) -> list[str]:
        return self.values["roles"]

    @property
    def address(self) -> str:
        return self.values["address"] or self.name

    def serving_profiles(self) -> list[str]:
        """The profiles that serve models themselves (not the auto profiles)."""
        return [p for p, v in self.values["profiles"].items() if "routes" not in v]

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


def _judge(label: str, value: Any, rule: Rule, problems: list[str],
           nested: bool = False) -> bool:
    """One setting (`label`: host and key) against its rule and the control-character
    ban (left to the inner keys' own judging when `nested`); False when refused."""
    shown = "(hidden)" if rule.secret else repr(value)
    spots = [] if nested else controls(value)
    if spots:
        problems.append(f"{label} = {shown}: holds a control character (at "
                        f"{spots[0].strip() or 'its value'}); a newline would add a line, "
                        "and so a directive, to a unit or config file")
        return False
    problem = rule.check(value)
    if problem:
        problems.append(f"{label} = {shown}: {problem}")
        return False
    return True


def _check_model(host: str, index: int, entry: Any, defaults: dict,
                 problems: list[str]) -> dict | None:
    where = f"host {host}: models[{index}]"
    if not isinstance(entry, dict):
        problems.append(f"{where} = {entry!r}: each model entry must be a mapping with "
                        "at least name, model and port")
        return None
    label = entry.get("name", f"#{index}")
    if isinstance(label, str) and NAME.match(label):
        where = f"host {host}: models[{index}] ({label})"
    for key in ("name", "model", "port"):
        if key not in entry:
            problems.append(f"{where}.{key}: missing; every model needs a served name, a "
                            "model (a Hugging Face repo id or a local folder) and a port")
    for key, value in entry.items():
        if key not in MODEL_RULES:
            problems.append(f"{where}.{key} = {value!r}: unknown model setting; accepted: "
                            f"{', '.join(sorted(MODEL_RULES))}")
        else:
            _judge(f"{where}.{key}", value, MODEL_RULES[key], problems)
    return {**deepcopy(defaults), **entry}


def _check_host(name: str, data: dict[str, Any], defaults: dict[str, Any],
                problems: list[str]) -> HostSettings:
    values = deepcopy(defaults)
    start = len(problems)
    if not (name and host_or_address(name) is None) and not name.startswith("@"):
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
        if _judge(f"host {name}: {key}", value, RULES[key], problems,
                  nested=key in ("models", "model_defaults")):
            values[key] = value
    if len(problems) > start:
        return HostSettings(name, values, [])

    roles = values["roles"]
    if not roles or len(set(roles)) != len(roles):
        problems.append(f"host {name}: roles = {roles!r}: accepted roles are "
                        f"{', '.join(ROLES)} (at least one, each once)")
    for role in ("litellm", "openwebui"):
        if role in roles and "postgres" not in roles:
            problems.append(f"host {name}: roles = {roles!r}: {role} keeps its data in "
                            "the local PostgreSQL, so add postgres to this host's roles")
    if "openwebui" in roles and "litellm" not in roles:
        problems.append(f"host {name}: roles = {roles!r}: openwebui fronts the local "
                        "LiteLLM, so add litellm to this host's roles")
    model_defaults = {**defaults["model_defaults"], **values["model_defaults"]}
    models = []
    if "vllm" in roles:
        for i, entry in enumerate(values["models"]):
            merged = _check_model(name, i, entry, model_defaults, problems)
            if merged is not None:
                models.append(merged)
    _check_unique(name, models, problems)
    _check_ports(name, values, models, problems)
    plain = [u for u in [values["pip_index_url"], *values["pip_extra_index_urls"],
                         *values["pip_find_links"]] if u.startswith("http://")]
    for url in plain:
        where = urllib.parse.urlsplit(url).hostname or url
        if where not in values["pip_trusted_hosts"]:
            problems.append(f"host {name}: {url!r} is served over plain HTTP, which pip "
                            f"ignores unless its host is trusted: add {where!r} to "
                            "pip_trusted_hosts, or serve it over https")
    for path in values["extra_ca_certificates"]:
        file = resolve_controller_path(path)
        if not file.is_file():
            problems.append(f"host {name}: extra_ca_certificates item {path!r}: no such "
                            "file on the controller; give PEM certificate files")
        elif PEM_CERTIFICATE not in file.read_bytes():
            problems.append(f"host {name}: extra_ca_certificates item {path!r}: holds no "
                            "PEM certificate (no '-----BEGIN CERTIFICATE-----' line); give "
                            "the CA's certificate in PEM form (openssl x509 -in CA.der "
                            "-inform der -out CA.crt)")
    for setting, env_var in OWNER_SECRETS.items():
        values[setting] = _owner_secret(name, values, setting, env_var, problems)
    return HostSettings(name, values, models, frozenset(data))


# Secrets the owner provides (none is generated): the setting, else this variable in the
# controller's environment, else the file named after the setting in secrets_dir.
OWNER_SECRETS = {"cloud_api_key": "OPENROUTER_API_KEY", "hf_token": "HF_TOKEN"}


def _owner_secret(host: str, values: dict, setting: str, env_var: str,
                  problems: list[str]) -> str:
    value, source = values[setting], None
    if not value and os.environ.get(env_var):
        value, source = os.environ[env_var], f"{env_var} in the controller's environment"
    path = resolve_controller_path(values["secrets_dir"]) / setting
    if not value and path.is_file():
        value, source = path.read_text().strip(), f"the file {path}"
    if source and (problem := RULES[setting].check(value)
                   or (controls(value) and "holds a control character")):
        problems.append(f"host {host}: {setting} from {source} (hidden): {problem}")
        return ""
    return value


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


def served_by_litellm(s: HostSettings, name: str) -> bool:
    """Is `name` a model name this host's LiteLLM serves: a profile, or a name one of
    its aliases routes?"""
    return name in s["profiles"] or any(fnmatch.fnmatchcase(name, pattern)
                                        for pattern in s["litellm_model_aliases"])


def _check_clusters(hosts: list[HostSettings], problems: list[str]) -> None:
    """A model that spans Sparks: its hosts are in the inventory and serve vLLM, its
    parallel sizes use one GPU on each, every host has the link's interface and address,
    and no host lends its GPU to two clusters."""
    by_name = {h.name: h for h in hosts}
    claimed: dict[str, str] = {}
    for h in hosts:
        for m in h.models if h.has("vllm") else []:
            c = m.get("cluster") or {}
            if not c:
                continue
            where = f"host {h.name}: model {m['name']}: cluster"
            members = c["hosts"]
            if m["swap_group"]:
                problems.append(f"{where}: a model across Sparks cannot be in a swap group "
                                f"(swap_group = {m['swap_group']!r}); give it its own entry "
                                "without swap_group")
            if members[0] != h.name:
                problems.append(f"{where}.hosts = {members!r}: the model is set on its "
                                f"leader, which is listed first; list {h.name} first or "
                                f"move the entry to {members[0]}")
            missing = [n for n in members if n not in by_name]
            if missing:
                problems.append(f"{where}.hosts = {members!r}: {', '.join(missing)} "
                                f"not in the inventory; hosts: {', '.join(by_name)}")
                continue
            size = c["tensor_parallel_size"] * c.get("pipeline_parallel_size", 1)
            if size != len(members):
                problems.append(
                    f"{where}: tensor_parallel_size x pipeline_parallel_size = {size}, but "
                    f"it spans {len(members)} Sparks with one GPU each: the product must "
                    f"be {len(members)}")
            for n in members:
                other = by_name[n]
                if not other.has("vllm"):
                    problems.append(f"{where}.hosts: {n} has no vllm role")
                unset = [k for k in ("link_interface", "link_address") if not other[k]]
                if unset:
                    problems.append(f"{where}.hosts: {n} has no {' or '.join(unset)}; "
                                    "every host of a cluster needs its interface and "
                                    "address on the direct link")
                if n in claimed:
                    problems.append(f"{where}.hosts: {n}'s GPU is already given to the "
                                    f"cluster of {claimed[n]}; a Spark serves one cluster")
                claimed[n] = f"{m['name']} on {h.name}"


def _check_fleet(hosts: list[HostSettings], problems: list[str]) -> None:
    _check_clusters(hosts, problems)
    served = {name for h in hosts if h.has("vllm") for m in h.models
              for name in (m["name"], m["swap_group"]) if name}
    for h in hosts:
        if not h.has("litellm"):
            continue
        profiles = h["profiles"]
        for pname, profile in profiles.items():  # their shape was checked per host
            where = f"host {h.name}: profiles.{pname}"
            if "routes" in profile:
                _check_auto(h, pname, profile["routes"], problems)
                continue
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
        # the documented default names the default profiles; `sparkstack claude-env`
        # says so if they are gone, and a slot set on purpose must name a served model
        for slot, name in h["claude_code_models"].items() if "claude_code_models" in h.given \
                else ():
            if not served_by_litellm(h, name):
                problems.append(f"host {h.name}: claude_code_models.{slot} = {name!r}: "
                                f"LiteLLM serves no such model; give a profile "
                                f"({', '.join(profiles)}) or a name an alias routes "
                                "(e.g. claude-sonnet-4-5)")


def _check_auto(h: HostSettings, name: str, routes: dict, problems: list[str]) -> None:
    """An auto profile's routes name profiles that serve models (never an auto profile:
    a loop), and its classifier a model this host serves."""
    where = f"host {h.name}: profiles.{name}.routes"
    serving = h.serving_profiles()
    targets = [("default", routes["default"])]
    targets += [(f"rules[{i}].profile", r["profile"]) for i, r in enumerate(routes.get("rules", []))]
    if routes.get("classifier"):
        targets += [(f"classifier.labels.{label}", label)
                    for label in routes["classifier"]["labels"]]
    for key, target in targets:
        if target not in h["profiles"]:
            problems.append(f"{where}.{key} = {target!r}: no such profile; profiles that "
                            f"serve models: {', '.join(serving) or 'none'}")
        elif target not in serving:
            problems.append(f"{where}.{key} = {target!r}: is an auto profile itself, a "
                            f"loop; route to a profile that serves models: "
                            f"{', '.join(serving)}")
    if routes.get("classifier"):
        model = routes["classifier"]["model"]
        mine = [m["name"] for m in h.models]
        if model not in mine:
            problems.append(f"{where}.classifier.model = {model!r}: not a model this host "
                            f"serves (the classifier runs beside LiteLLM); its models: "
                            f"{', '.join(mine) or 'none (add the vllm role and the model)'}")


resolve_controller_path = controller_path


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
