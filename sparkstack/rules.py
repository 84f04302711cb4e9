"""What every setting accepts: one rule per key of defaults.yaml and per key of a model
entry. A rule returns None for a good value, else what would be accepted; `bad` is a
wrong value it refuses (the unit tests hold every rule to it).

Values reach unit files, environment files, config files and command lines, so no
string anywhere may carry a control character: a newline would add a line, and so a
directive, to a unit file.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

Check = Callable[[Any], "str | None"]

CONTROL = re.compile(r"[\x00-\x1f\x7f]")
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
USER = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
PATH = re.compile(r"^/[A-Za-z0-9._+@/-]*$")
HOSTNAME = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                      r"(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$")
URL = re.compile(r"^https?://[A-Za-z0-9.\-\[\]:]+(:\d{1,5})?(/[^\s]*)?$")
VERSION = re.compile(r"^\d+(\.\d+){1,3}((a|b|rc)\d+)?(\.post\d+)?(\.dev\d+)?$")
# a pip requirement (name, extras, a version specifier) or a wheel's https URL
REQUIREMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(\[[A-Za-z0-9_,.-]+\])?"
                         r"\s*((===?|!=|~=|<=?|>=?)\s*[A-Za-z0-9.*+!_-]+\s*,?\s*)*$")
WHEEL_URL = re.compile(r"^https?://\S+\.whl$")
# PEP 508's direct reference: `name[extras] @ URL`, as pip documents it
DIRECT_REFERENCE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(\[[A-Za-z0-9_,.-]+\])?\s*@\s*"
                              r"(https?|file)://\S+$")
REPO = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
REVISION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,127}$")
FLAG = re.compile(r"^--?[A-Za-z0-9][A-Za-z0-9_-]*(=\S+)?$|^[^\s-]\S*$")
CLOUD_MODEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/-]*$")
ARCHS = re.compile(r"^[0-9]+\.[0-9]+[a-z]?(\+PTX)?([ ;][0-9]+\.[0-9]+[a-z]?(\+PTX)?)*$")

ROLES = ("postgres", "vllm", "litellm", "openwebui")
KV_CACHE_DTYPES = ("auto", "fp8", "fp8_e4m3", "fp8_e5m2")
# vLLM's registered names (vllm/entrypoints/openai/tool_parsers, vllm/reasoning);
# vLLM refuses any other at start, after the old model would have been stopped
TOOL_CALL_PARSERS = (
    "deepseek_v3", "deepseek_v31", "deepseek_v32", "ernie45", "gemma4", "gigachat3",
    "glm45", "glm47", "granite", "granite-20b-fc", "hermes", "hunyuan_a13b", "internlm",
    "jamba", "kimi_k2", "llama3_json", "llama4_json", "llama4_pythonic", "longcat",
    "minimax", "minimax_m2", "minimax_m3", "mistral", "olmo3", "openai", "phi4_mini_json",
    "pythonic", "qwen3_coder", "qwen3_xml", "seed_oss", "step3", "step_deepresearch",
    "xlam")
REASONING_PARSERS = (
    "cohere_command3", "cohere_command4", "deepseek_r1", "deepseek_v3", "deepseek_v4",
    "ernie45", "gemma4", "glm45", "glm47", "granite", "holo2", "hunyuan_a13b", "hy_v3",
    "kimi_k2", "mimo", "minimax_m2", "minimax_m2_append_think", "minimax_m3", "mistral",
    "nemotron_v3", "olmo3", "openai_gptoss", "poolside_v1", "qwen3", "seed_oss", "step3",
    "step3p5")
QUANTIZATIONS = (
    "awq", "awq_marlin", "bitsandbytes", "compressed-tensors", "experts_int8", "fbgemm_fp8",
    "fp8", "gguf", "gptq", "gptq_marlin", "gptq_bitblas", "modelopt", "modelopt_fp4",
    "mxfp4", "quark", "torchao")
LOAD_FORMATS = ("auto", "pt", "safetensors", "npcache", "dummy", "tensorizer", "sharded_state",
                "gguf", "bitsandbytes", "mistral", "runai_streamer", "fastsafetensors")


@dataclass(frozen=True)
class Rule:
    check: Check
    bad: Any              # a wrong value of the right type this rule refuses
    secret: bool = False  # a refusal names the setting but never shows its value


def controls(value: Any, where: str = "") -> list[str]:
    """Every place in `value` (nested) holding a control character."""
    if isinstance(value, str):
        return [where or "the value"] if CONTROL.search(value) else []
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in
                controls(str(k), f"{where} key {k!r}") + controls(v, f"{where}.{k}")]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in controls(v, f"{where}[{i}]")]
    return []


# --- building blocks ------------------------------------------------------------------------
def kind(expected: type, what: str) -> Check:
    def check(v):
        ok = isinstance(v, expected) and not (expected in (int, float) and isinstance(v, bool))
        return None if ok else f"must be {what}"
    return check


def both(*checks: Check) -> Check:
    def check(v):
        for c in checks:
            problem = c(v)
            if problem:
                return problem
        return None
    return check


def matching(pattern: re.Pattern, what: str, empty: bool = False) -> Check:
    def check(v):
        if not isinstance(v, str):
            return f"must be {what}"
        return None if (empty and v == "") or pattern.match(v) else f"must be {what}"
    return check


def number(low: float, high: float, what: str, integer: bool = True) -> Check:
    def check(v):
        ok_type = isinstance(v, int) if integer else isinstance(v, (int, float))
        if isinstance(v, bool) or not ok_type or not low <= v <= high:
            return f"must be {what}"
        return None
    return check


def choice(options: tuple, empty: bool = False) -> Check:
    def check(v):
        if (empty and v == "") or v in options:
            return None
        return "must be one of " + ", ".join(options) + (" (or empty)" if empty else "")
    return check


def each(item: Check, what: str) -> Check:
    def check(v):
        if not isinstance(v, list):
            return f"must be a list of {what}"
        for i, x in enumerate(v):
            problem = item(x)
            if problem:
                return f"item {i} = {x!r}: {problem}"
        return None
    return check


def mapping(key: Check, value: Check, what: str) -> Check:
    def check(v):
        if not isinstance(v, dict):
            return f"must be a mapping of {what}"
        for k, x in v.items():
            problem = key(k) or value(x)
            if problem:
                return f"{k!r}: {problem}"
        return None
    return check


def boolean(v):
    return None if isinstance(v, bool) else "must be true or false"


def address(v):
    try:
        if isinstance(v, str):  # ip_address takes integers too
            ipaddress.ip_address(v)
            return None
    except ValueError:
        pass
    return "must be an IP address, e.g. 127.0.0.1, 0.0.0.0 or 192.168.1.20"


def optional_address(v):
    return None if v == "" else address(v)


IFNAME = re.compile(r"^[A-Za-z0-9_.:-]{1,15}$")
CLUSTER_KEYS = {"hosts", "tensor_parallel_size", "pipeline_parallel_size", "master_port"}


def cluster(v):
    """A model entry's `cluster` (its shape; the hosts are checked against the fleet)."""
    if v == {}:
        return None
    if not isinstance(v, dict) or not {"hosts", "tensor_parallel_size"} <= set(v) \
            or set(v) - CLUSTER_KEYS:
        return ("must be empty or a mapping with hosts (the leader first), "
                "tensor_parallel_size, and optionally pipeline_parallel_size and "
                "master_port")
    hosts = v["hosts"]
    if not isinstance(hosts, list) or len(hosts) < 2 or len(set(hosts)) != len(hosts) \
            or any(host_or_address(h) or h == "" for h in hosts):
        return "hosts must list two or more different inventory host names, leader first"
    for key in ("tensor_parallel_size", "pipeline_parallel_size"):
        size = v.get(key, 1)
        if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= 64:
            return f"{key} must be a whole number from 1 to 64"
    port = v.get("master_port", 29500)
    if isinstance(port, bool) or not isinstance(port, int) or not 1024 <= port <= 65535:
        return "master_port must be a port from 1024 to 65535"
    return None


def host_or_address(v):
    if isinstance(v, str) and (v == "" or HOSTNAME.match(v) or address(v) is None):
        return None
    return "must be a host name or an IP address (or empty)"


def text(v):
    return None if isinstance(v, str) else "must be a string"


def token(v):
    if isinstance(v, str) and not re.search(r"\s", v):
        return None
    return "must be a string without spaces"


def no_proxy(v):
    if isinstance(v, str) and re.fullmatch(r"[A-Za-z0-9.*:/\[\]_-]*(,[A-Za-z0-9.*:/\[\]_-]+)*",
                                           v):
        return None
    return "must be host names, domains or addresses separated by commas"


def root_path(v):
    if not isinstance(v, str) or not PATH.match(v) or v in ("/", "") or "//" in v \
            or "/../" in f"{v}/" or "/./" in f"{v}/":
        return ("must be an absolute path of letters, digits, '.', '_', '-', '+', '@' and "
                "'/', not / itself, e.g. /opt/sparkstack")
    return None


def package(v):
    if isinstance(v, str) and v.strip() and (REQUIREMENT.match(v) or WHEEL_URL.match(v)
                                             or DIRECT_REFERENCE.match(v)):
        return None
    return ("must be a pip requirement such as vllm==0.33.0, a direct reference such as "
            "vllm @ https://host/vllm-0.33.0-cp312-abi3-linux_aarch64.whl, or an https URL "
            "of a wheel")


def constraint(v):
    if isinstance(v, str) and REQUIREMENT.match(v) and "==" in v:
        return None
    return "must be a pinned pip requirement such as torch==2.9.1"


def url_or_path(v):
    if isinstance(v, str) and (URL.match(v) or root_path(v) is None):
        return None
    return "must be an http(s) URL or an absolute folder"


def model_ref(v):
    if isinstance(v, str) and (REPO.match(v) or root_path(v) is None):
        return None
    return "must be a Hugging Face repo id (org/name) or an absolute folder"


def profiles(v):
    if not isinstance(v, dict):
        return "must be a mapping of profile names to {local: [...], cloud: '...'}"
    for name, p in v.items():
        if not isinstance(name, str) or not NAME.match(name):
            return f"{name!r}: a profile name is letters, digits, '.', '_' or '-'"
        if not isinstance(p, dict):
            return f"{name}: must be a mapping like {{local: [names], cloud: 'vendor/model'}}"
        unknown = set(p) - {"local", "cloud", "title", "description", "routes"}
        if unknown:
            return f"{name}.{sorted(unknown)[0]}: unknown; accepted: local, cloud, title, " \
                   "description, routes (an auto profile)"
        if "routes" in p:
            if "local" in p or "cloud" in p:
                return f"{name}: an auto profile (routes) picks other profiles; it has no " \
                       "local or cloud models of its own"
            if problem := auto_routes(p["routes"]):
                return f"{name}.routes{problem}"
        local = p.get("local", [])
        if not isinstance(local, list) or any(not isinstance(x, str) or not NAME.match(x)
                                              for x in local):
            return f"{name}.local: must be a list of served names or swap groups"
        if "cloud" in p and (not isinstance(p["cloud"], str) or (
                p["cloud"] and not CLOUD_MODEL.match(p["cloud"]))):
            return f"{name}.cloud: must be a model name such as openrouter/qwen/qwen3-4b:free"
        for key in ("title", "description"):
            if key in p and (not isinstance(p[key], str) or len(p[key]) > 200):
                return f"{name}.{key}: must be a line of text (at most 200 characters)"
    return None


RULE_CONDITIONS = {"tools": "true or false", "min_prompt_tokens": "a whole number",
                   "max_prompt_tokens": "a whole number", "keywords": "a list of words",
                   "pattern": "a regular expression"}
CLASSIFIER_KEYS = {"model", "labels", "budget_ms", "min_confidence"}


def _route_rule(i: int, rule) -> str | None:
    where = f".rules[{i}]"
    if not isinstance(rule, dict) or "profile" not in rule:
        return f"{where}: must be a mapping with a profile and conditions, e.g. " \
               "{profile: code, tools: true}"
    unknown = set(rule) - {"profile", *RULE_CONDITIONS}
    if unknown:
        return f"{where}.{sorted(unknown)[0]}: unknown; a rule's conditions are " \
               f"{', '.join(RULE_CONDITIONS)}"
    if len(rule) == 1:
        return f"{where}: names no condition; give one or more of {', '.join(RULE_CONDITIONS)}"
    if not isinstance(rule["profile"], str) or not NAME.match(rule["profile"]):
        return f"{where}.profile: must be a profile name"
    if "tools" in rule and not isinstance(rule["tools"], bool):
        return f"{where}.tools: must be true or false"
    for key in ("min_prompt_tokens", "max_prompt_tokens"):
        if key in rule and (not isinstance(rule[key], int) or isinstance(rule[key], bool)
                            or not 0 <= rule[key] <= 10_000_000):
            return f"{where}.{key}: must be a whole number of tokens from 0 to 10000000"
    if "keywords" in rule and (not isinstance(rule["keywords"], list) or not rule["keywords"]
                               or any(not isinstance(k, str) or not k.strip()
                                      for k in rule["keywords"])):
        return f"{where}.keywords: must be a list of one or more words or phrases"
    if "pattern" in rule:
        try:
            re.compile(rule["pattern"])
        except (re.error, TypeError) as e:
            return f"{where}.pattern: not a regular expression ({e})"
    return None


def auto_routes(v) -> str | None:
    """The routes of an auto profile (the names they give are checked per host)."""
    if not isinstance(v, dict) or not isinstance(v.get("default"), str):
        return ": must be a mapping with a default profile, e.g. {default: fast, rules: [...]}"
    unknown = set(v) - {"default", "hints", "rules", "classifier"}
    if unknown:
        return f".{sorted(unknown)[0]}: unknown; accepted: default, hints, rules, classifier"
    if "hints" in v and not isinstance(v["hints"], bool):
        return ".hints: must be true or false (whether '#profile' in a message picks it)"
    rules = v.get("rules", [])
    if not isinstance(rules, list):
        return ".rules: must be a list of rules"
    for i, rule in enumerate(rules):
        if problem := _route_rule(i, rule):
            return problem
    c = v.get("classifier")
    if c is None:
        return None
    if not isinstance(c, dict) or not isinstance(c.get("model"), str):
        return ".classifier: must be a mapping with a model (a served name) and labels"
    unknown = set(c) - CLASSIFIER_KEYS
    if unknown:
        return f".classifier.{sorted(unknown)[0]}: unknown; accepted: " \
               f"{', '.join(sorted(CLASSIFIER_KEYS))}"
    labels = c.get("labels")
    if not isinstance(labels, dict) or not labels:
        return ".classifier.labels: must map one or more profiles to what their requests " \
               "are about, e.g. {code: 'writing or fixing code'}"
    if any(not isinstance(k, str) or not NAME.match(k) or not isinstance(d, str)
           or not d.strip() or len(d) > 200 for k, d in labels.items()):
        return ".classifier.labels: each label is a profile name with a line of text " \
               "(at most 200 characters) saying what its requests are about"
    budget = c.get("budget_ms", 300)
    if not isinstance(budget, int) or isinstance(budget, bool) or not 10 <= budget <= 5000:
        return ".classifier.budget_ms: must be a whole number of milliseconds from 10 to 5000"
    conf = c.get("min_confidence", 0.0)
    if not isinstance(conf, (int, float)) or isinstance(conf, bool) or not 0 <= conf <= 1:
        return ".classifier.min_confidence: must be a number from 0 to 1"
    return None


def aliases(v):
    if not isinstance(v, dict):
        return "must be a mapping of model names (wildcards allowed) to profiles"
    for pattern, target in v.items():
        if not isinstance(pattern, str) or not re.fullmatch(r"[A-Za-z0-9.*?_:-]+", pattern):
            return f"{pattern!r}: a model name or pattern is letters, digits and . * ? _ : -"
        if not isinstance(target, str) or not NAME.match(target):
            return f"{pattern}: {target!r} must be a profile name"
    return None


def claude_slots(v):
    if not isinstance(v, dict) or set(v) != {"model", "opus", "sonnet", "haiku"}:
        return "must map exactly model, opus, sonnet and haiku to model names"
    bad = [k for k, x in v.items() if not isinstance(x, str) or not CLOUD_MODEL.match(x)]
    return f"{bad[0]}: must be a model name" if bad else None


ENVIRONMENT = mapping(matching(ENV_NAME, "an environment variable name (letters, digits, _)"),
                      kind(str, "a string"), "variable names to strings")
PORT = number(1, 65535, "a port from 1 to 65535")
URL_CHECK = matching(URL, "an http:// or https:// URL, e.g. https://huggingface.co")
OPTIONAL_URL = matching(URL, "an http:// or https:// URL (or empty)", empty=True)
SERVICE_USER = matching(USER, "a system user name (lower case letters, digits, _ and -)")
ABSOLUTE = matching(PATH, "an absolute path of letters, digits, '.', '_', '-' and '/'")

MODEL_RULES: dict[str, Rule] = {
    "name": Rule(matching(NAME, "letters, digits, '.', '_' or '-' (at most 63)"), "a b"),
    "model": Rule(model_ref, "not a repo"),
    "port": Rule(PORT, 70000),
    "revision": Rule(matching(REVISION, "a branch, tag or commit (or empty)", empty=True),
                     "main branch"),
    "max_model_len": Rule(number(16, 10_000_000, "a whole number of tokens, at least 16"), 0),
    "gpu_memory_utilization": Rule(number(0.01, 0.95, "above 0 and at most 0.95 (the OS "
                                                      "and other services share the "
                                                      "memory)", integer=False), 1.5),
    "max_num_seqs": Rule(number(1, 4096, "a whole number from 1 to 4096"), 0),
    "kv_cache_dtype": Rule(choice(KV_CACHE_DTYPES), "fp4"),
    "quantization": Rule(choice(QUANTIZATIONS, empty=True), "int3"),
    "tool_call_parser": Rule(choice(TOOL_CALL_PARSERS, empty=True), "qwen3"),
    "reasoning_parser": Rule(choice(REASONING_PARSERS, empty=True), "thinker"),
    "enable_prefix_caching": Rule(boolean, "yes"),
    "load_format": Rule(choice(("",) + LOAD_FORMATS), "zip"),
    "trust_remote_code": Rule(boolean, "no"),
    "extra_args": Rule(each(matching(FLAG, "a vllm serve flag such as --enforce-eager, or "
                                           "its value, without spaces"), "flags"),
                       ["--enable eager"]),
    "environment": Rule(ENVIRONMENT, {"BAD NAME": "1"}),
    "skip_fit_check": Rule(boolean, "sometimes"),
    "cluster": Rule(cluster, {"hosts": ["spark1"], "tensor_parallel_size": 1}),
    "swap_group": Rule(matching(NAME, "a swap group name: letters, digits, '.', '_' or '-' "
                                      "(or empty)", empty=True), "big group"),
}

RULES: dict[str, Rule] = {
    "roles": Rule(each(choice(ROLES), "roles"), ["webserver"]),
    "address": Rule(host_or_address, "spark one"),
    "secrets_dir": Rule(matching(re.compile(r"^[A-Za-z0-9._/-]+$"), "a folder on the "
                                 "controller (letters, digits, '.', '_', '-', '/')"), "a b"),
    "extra_ca_certificates": Rule(each(matching(re.compile(r"^[A-Za-z0-9._/@+-]+$"),
                                                "a PEM file on the controller"), "files"),
                                  ["my cert.pem"]),
    "http_proxy": Rule(OPTIONAL_URL, "proxy.lan:3128"),
    "https_proxy": Rule(OPTIONAL_URL, "proxy.lan:3128"),
    "no_proxy": Rule(no_proxy, "localhost 127.0.0.1"),
    "pip_index_url": Rule(OPTIONAL_URL, "mirror.lan/simple"),
    "pip_extra_index_urls": Rule(each(URL_CHECK, "URLs"), ["mirror.lan"]),
    "pip_find_links": Rule(each(url_or_path, "folders or URLs"), ["wheels"]),
    "pip_constraints": Rule(each(constraint, "pinned requirements"), ["torch"]),
    "pip_trusted_hosts": Rule(each(matching(HOSTNAME, "a host name or address"),
                                   "host names"), ["http://mirror.lan"]),
    "install_root": Rule(root_path, "opt/sparkstack"),
    "config_root": Rule(root_path, "etc/sparkstack"),
    "state_root": Rule(root_path, "/"),
    "postgres_port": Rule(PORT, 0),
    "backup_keep": Rule(number(1, 100, "a whole number from 1 to 100"), 0),
    "vllm_package": Rule(package, ""),
    "vllm_extra_index_url": Rule(OPTIONAL_URL, "download.pytorch.org/whl/cu130"),
    "vllm_user": Rule(SERVICE_USER, "vLLM"),
    "cuda_home": Rule(ABSOLUTE, "cuda"),
    "torch_cuda_arch_list": Rule(matching(ARCHS, "compute capabilities such as 12.1a or "
                                                 "8.0;9.0+PTX"), "sm_121"),
    "triton_ptxas_path": Rule(ABSOLUTE, "ptxas"),
    "vllm_start_timeout": Rule(number(5, 86400, "seconds, from 5 to 86400"), 0),
    "vllm_environment": Rule(ENVIRONMENT, {"1ST": "x"}),
    "hf_endpoint": Rule(URL_CHECK, "huggingface.co"),
    "fit_check_hub": Rule(boolean, "on"),
    "prefetch_weights": Rule(boolean, "on"),
    "hf_token": Rule(token, "hf_ abc", secret=True),
    "link_interface": Rule(matching(IFNAME, "a network interface name such as "
                                            "enp1s0f0np0 (or empty)", empty=True), "en p1"),
    "link_address": Rule(optional_address, "spark-link"),
    # the entries' own keys are held to MODEL_RULES by the inventory's validation
    "models": Rule(each(kind(dict, "a mapping of model settings"), "model entries"),
                   ["qwen3-4b"]),
    "model_defaults": Rule(lambda v: model_settings(v), {"gpu_memory_utilization": 2.0}),
    "litellm_version": Rule(matching(VERSION, "a release number such as 1.102.4"), "latest"),
    "litellm_user": Rule(SERVICE_USER, "Lite LLM"),
    "litellm_bind_address": Rule(address, "localhost:4000"),
    "litellm_port": Rule(PORT, 65536),
    "litellm_ui_username": Rule(matching(re.compile(r"^[A-Za-z0-9._@-]{1,64}$"),
                                         "a user name (letters, digits, . _ @ -)"), "ad min"),
    "litellm_request_log": Rule(boolean, "yes"),
    "request_log": Rule(boolean, "yes"),
    "request_log_days": Rule(number(1, 3650, "days, from 1 to 3650"), 0),
    "request_log_text": Rule(boolean, "yes"),
    "litellm_processes": Rule(number(1, 16, "a whole number from 1 to 16"), 0),
    "litellm_num_retries": Rule(number(0, 10, "a whole number from 0 to 10"), 11),
    "litellm_timeout": Rule(number(1, 86400, "seconds, from 1 to 86400"), 0),
    "litellm_cooldown_time": Rule(number(0, 3600, "seconds, from 0 to 3600"), -1),
    "litellm_routes_interval": Rule(number(5, 3600, "seconds, from 5 to 3600"), 1),
    "litellm_model_aliases": Rule(aliases, {"claude *": "code"}),
    "claude_code_models": Rule(claude_slots, {"model": "code"}),
    "profiles": Rule(profiles, {"fast": {"local": "qwen3-4b"}}),
    "cloud_api_base": Rule(URL_CHECK, "openrouter.ai/api/v1"),
    "cloud_api_key": Rule(token, "sk or key", secret=True),
    "openwebui_version": Rule(matching(VERSION, "a release number such as 0.12.4"), "main"),
    "openwebui_user": Rule(SERVICE_USER, "Open WebUI"),
    "openwebui_bind_address": Rule(address, "all"),
    "openwebui_port": Rule(PORT, -1),
    "openwebui_signup": Rule(boolean, "maybe"),
    "openwebui_admin_email": Rule(matching(re.compile(r"^[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+"
                                                      r"(\.[A-Za-z0-9-]+)*$"),
                                           "an e-mail address such as owner@example.com"),
                                  "owner at example.com"),
}


def model_settings(v):
    """model_defaults: settings every model entry takes, each held to its rule and to
    the control-character ban."""
    if not isinstance(v, dict):
        return "must be a mapping of model settings"
    for key, value in v.items():
        if key not in MODEL_RULES or key in ("name", "model", "port"):
            accepted = ", ".join(sorted(set(MODEL_RULES) - {"name", "model", "port"}))
            return f"{key}: unknown model setting; accepted: {accepted}"
        problem = MODEL_RULES[key].check(value)
        if problem:
            return f"{key} = {value!r}: {problem}"
        if spots := controls(value):
            return f"{key} = {value!r}: holds a control character (at {spots[0]})"
    return None
