"""What the controller and a Spark agree on: where things are, what units are called,
and the formats of the files one side writes and the other reads.

The controller (the deploy, `sparkstack health`) imports this module from the host
package; the host programs import it too. Nothing else spells a sparkstack path, a unit
name or one of these file formats. Standard library only.
"""

from __future__ import annotations

import copy
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

DEFAULT_INSTALL_ROOT = "/opt/sparkstack"
# in a venv (or an unpacked wheel's folder): written last, so it is there only once
# the install is complete; it holds what was installed (the venv's digest, a sha256)
VENV_STAMP = ".sparkstack-installed"
DEFAULT_CONFIG_ROOT = "/etc/sparkstack"
DEFAULT_STATE_ROOT = "/var/lib/sparkstack"
RUNTIME_DIR = "/run/sparkstack"       # gate lock and drain markers; cleared by a reboot
UNIT_DIR = "/etc/systemd/system"
CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"

# --- unit names -------------------------------------------------------------------------
POSTGRES_UNIT = "postgresql.service"
# the distribution's template for each cluster (what really runs the server)
POSTGRES_CLUSTER_UNIT = "postgresql@.service"
# The front door: nginx on LiteLLM's port, in front of `litellm_processes` LiteLLM
# processes (one template unit, instances 1..N), each on its own unix socket, and one
# socket systemd holds for all of them (the queue nginx falls back to while none runs).
FRONTDOOR_UNIT = "sparkstack-frontdoor.service"
LITELLM_TEMPLATE = "sparkstack-litellm@.service"
LITELLM_UNIT_GLOB = "sparkstack-litellm@*.service"
LITELLM_QUEUE_SOCKET = "sparkstack-litellm-queue.socket"
LITELLM_MIGRATE_UNIT = "sparkstack-litellm-migrate.service"
# what a deploy from before the front door left (one LiteLLM on a TCP socket)
LITELLM_SINGLE_UNITS = ("sparkstack-litellm.service", "sparkstack-litellm.socket")
ROUTES_UNIT = "sparkstack-litellm-routes.service"
ROUTES_TIMER = "sparkstack-litellm-routes.timer"
OPENWEBUI_UNIT = "sparkstack-openwebui.service"
VLLM_UNIT_PREFIX = "sparkstack-vllm-"
VLLM_UNIT_GLOB = f"{VLLM_UNIT_PREFIX}*.service"


def vllm_unit(model_name: str) -> str:
    return f"{VLLM_UNIT_PREFIX}{model_name}.service"


DEFAULT_MASTER_PORT = 29500   # where a cluster's nodes join its leader (torch.distributed)
CLUSTER_UNIT_PREFIX = "sparkstack-cluster-"
CLUSTER_UNIT_GLOB = f"{CLUSTER_UNIT_PREFIX}*.service"


def cluster_unit(model_name: str) -> str:
    """A Spark's part of a model that another Spark leads (`vllm serve --headless`)."""
    return f"{CLUSTER_UNIT_PREFIX}{model_name}.service"


def litellm_unit(process: int) -> str:
    """The unit of LiteLLM process `process` (1..litellm_processes)."""
    return f"sparkstack-litellm@{process}.service"


def litellm_units(processes: int) -> list[str]:
    return [litellm_unit(i) for i in range(1, processes + 1)]


def litellm_process_socket(process: int) -> str:
    """Where LiteLLM process `process` listens (its own runtime folder)."""
    return f"/run/sparkstack-litellm-{process}/http.sock"


LITELLM_QUEUE_PATH = "/run/sparkstack-litellm-queue.sock"
# What one LiteLLM process holds (RSS measured on the simulated Sparks: about 0.5 GiB
# with the request log, rounded up): the fit check keeps it from the models.
LITELLM_PROCESS_GIB = 0.6


# --- host program names (console scripts of this package) ------------------------------
GATE = "sparkstack-routes"
WAIT_READY = "sparkstack-wait-ready"
CLUSTER_NODE = "sparkstack-cluster-node"
HEALTH = "sparkstack-health"
LITELLM_SERVE = "sparkstack_host.litellm_serve"   # a module, run with LiteLLM's Python
DOWNLOAD = "sparkstack-download"
CHECKPOINT = "sparkstack-checkpoint"
USAGE = "sparkstack-usage"
BACKUP = "sparkstack-backup"
HOST_PACKAGE = "sparkstack-host"


@dataclass(frozen=True)
class Layout:
    """Every sparkstack path on a host, from the three roots the inventory sets."""

    install_root: str = DEFAULT_INSTALL_ROOT
    config_root: str = DEFAULT_CONFIG_ROOT
    state_root: str = DEFAULT_STATE_ROOT
    runtime_dir: str = RUNTIME_DIR

    # one folder per service under each root; a service's venvs are built side by side
    # (venvs/DIGEST) and `current` links the one in use, `previous` the one before
    def service_root(self, service: str) -> str:
        return f"{self.install_root}/{service}"

    def venv(self, service: str) -> str:
        """The venv a service runs from (a link to one of its versioned venvs)."""
        return f"{self.service_root(service)}/current"

    def venv_version(self, service: str, digest: str) -> str:
        return f"{self.service_root(service)}/venvs/{digest}"

    def conf_dir(self, service: str) -> str:
        return f"{self.config_root}/{service}"

    def state_dir(self, service: str) -> str:
        return f"{self.state_root}/{service}"

    def secrets_env(self, service: str) -> str:
        return f"{self.conf_dir(service)}/secrets.env"

    # the host package
    @property
    def host_venv(self) -> str:
        return self.venv("host")

    @property
    def host_wheels(self) -> str:
        return f"{self.install_root}/host/wheels"

    def host_lib(self, sha256: str) -> str:
        """The host package alone (no dependencies), for LiteLLM's process."""
        return f"{self.install_root}/host/lib/{sha256[:16]}"

    def host_program(self, name: str) -> str:
        """A console script of this package, in the host venv."""
        return f"{self.host_venv}/bin/{name}"

    # files with a format of their own
    @property
    def manifest(self) -> str:
        return f"{self.config_root}/manifest.json"

    @property
    def routes_plan(self) -> str:
        return f"{self.conf_dir('litellm')}/routes.json"

    @property
    def litellm_config(self) -> str:
        return f"{self.conf_dir('litellm')}/config.yaml"

    @property
    def auto_routes(self) -> str:
        """How each auto profile picks a profile per request (AUTO_ROUTES_FORMAT)."""
        return f"{self.conf_dir('litellm')}/auto-routes.json"

    @property
    def pip_conf(self) -> str:
        return f"{self.install_root}/pip.conf"

    @property
    def pip_constraints(self) -> str:
        return f"{self.install_root}/pip-constraints.txt"

    def request_log_spool(self, process: int | str) -> str:
        """Rows of one LiteLLM process while PostgreSQL is away (LiteLLM's own disk)."""
        return f"{self.state_dir('litellm')}/request-log-{process}.spool"

    def streams_journal(self, process: int | str) -> str:
        """Streams one LiteLLM process has under way: those left when it died were cut."""
        return f"{self.state_dir('litellm')}/streams-{process}.jsonl"

    @property
    def frontdoor_conf(self) -> str:
        return f"{self.conf_dir('litellm')}/frontdoor.conf"

    @property
    def checkpoints(self) -> str:
        """What updates can be undone with (root-only tar files, see checkpoint.py)."""
        return f"{self.state_dir('update')}/checkpoints"

    @property
    def update_history(self) -> str:
        """The checkpoints taken before each update that took effect, oldest first."""
        return f"{self.state_dir('update')}/history"

    @property
    def swap_choices(self) -> str:
        """Which member of each swap group runs, as `sparkstack swap` chose it."""
        return f"{self.state_dir('vllm')}/swap-choices.json"

    @property
    def drained_dir(self) -> str:
        return f"{self.runtime_dir}/drained"

    @property
    def gate_lock(self) -> str:
        return f"{self.runtime_dir}/routes.lock"

    def cache_dir(self, service: str, name: str = "") -> str:
        return f"{self.state_dir(service)}/cache" + (f"/{name}" if name else "")


def reach_address(bind: str) -> str:
    """Where a client on the host itself reaches a service bound to `bind`."""
    return {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(bind, bind)


def http_url(address: str, port: int) -> str:
    """http://address:port, an IPv6 address in brackets."""
    return f"http://[{address}]:{port}" if ":" in address else f"http://{address}:{port}"


def local_url(bind: str, port: int) -> str:
    """http://address:port of a service bound to `bind`, reached from the host itself."""
    return http_url(reach_address(bind), port)


def backend_id(host: str, port: int) -> str:
    """How the fleet names one vLLM unit: the routes, the drains, the swaps."""
    return f"{host}:{port}"


def backend_host(backend: str) -> str:
    """The host of a backend id."""
    return backend.rsplit(":", 1)[0]


# --- environment files (systemd EnvironmentFile=) ---------------------------------------
# Values are double-quoted; inside the quotes systemd takes a backslash before one of
# these characters as the character itself. Values never hold control characters (the
# settings are validated), so every assignment is one line.
_ENV_ESCAPED = '\\"`$'


def write_env_file(values: dict[str, str]) -> str:
    out = ["# Rendered by sparkstack; root-only."]
    for key, value in values.items():
        text = str(value)
        if any(ord(c) < 32 or ord(c) == 127 for c in text):
            raise ValueError(f"{key}: a value in an environment file cannot hold "
                             "control characters")
        out.append(f'{key}="' + "".join("\\" + c if c in _ENV_ESCAPED else c
                                        for c in text) + '"')
    return "\n".join(out) + "\n"


def read_env_file(text: str) -> dict[str, str]:
    """The values of an environment file written by `write_env_file`."""
    values = {}
    for line in text.splitlines():
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, raw = line.split("=", 1)
        if raw.startswith('"') and raw.endswith('"') and len(raw) >= 2:
            raw, chars, i = raw[1:-1], [], 0
            while i < len(raw):
                if raw[i] == "\\" and i + 1 < len(raw) and raw[i + 1] in _ENV_ESCAPED:
                    i += 1
                chars.append(raw[i])
                i += 1
            raw = "".join(chars)
        values[key] = raw
    return values


def load_env_file(path: str | Path) -> dict[str, str]:
    return read_env_file(Path(path).read_text())


# --- manifest.json: what the deploy set up on this host ---------------------------------
MANIFEST_SCHEMA = 1


@dataclass
class ManifestModel:
    name: str
    model: str
    port: int
    address: str               # what vLLM binds to
    max_model_len: int
    gpu_memory_utilization: float
    swap_group: str = ""       # alternatives on this host: one runs, the others stand by
    # a model across Sparks that this host leads: the other nodes (host: link address),
    # which join on master_port
    cluster_nodes: dict[str, str] = field(default_factory=dict)
    master_port: int = 0

    @property
    def unit(self) -> str:
        return vllm_unit(self.name)

    @property
    def url(self) -> str:
        return local_url(self.address, self.port)


@dataclass
class ManifestPart:
    """This host's part of a model another Spark leads."""
    model: str                 # the model's served name
    leader: str
    leader_address: str        # on the direct link
    master_port: int
    rank: int

    @property
    def unit(self) -> str:
        return cluster_unit(self.model)


@dataclass
class Manifest:
    host: str
    roles: list[str]
    layout: Layout
    models: list[ManifestModel] = field(default_factory=list)
    databases: list[str] = field(default_factory=list)   # its services' PostgreSQL databases
    postgres_port: int = 5432
    litellm_address: str = "127.0.0.1"
    litellm_port: int = 4000
    openwebui_address: str = "127.0.0.1"
    openwebui_port: int = 8080
    parts: list[ManifestPart] = field(default_factory=list)
    schema: int = MANIFEST_SCHEMA

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str) -> Manifest:
        data = json.loads(text)
        if data.get("schema") != MANIFEST_SCHEMA:
            raise ValueError(f"manifest schema {data.get('schema')!r}, expected "
                             f"{MANIFEST_SCHEMA}: re-deploy this host")
        data["layout"] = Layout(**data["layout"])
        data["models"] = [ManifestModel(**m) for m in data["models"]]
        data["parts"] = [ManifestPart(**part) for part in data.get("parts", [])]
        # written before the manifest listed them: the two services that had one
        data.setdefault("databases", [r for r in ("litellm", "openwebui")
                                      if r in data["roles"]])
        return cls(**data)

    @classmethod
    def load(cls, config_root: str) -> Manifest:
        return cls.from_json(Path(Layout(config_root=config_root).manifest).read_text())

    def model(self, name: str) -> ManifestModel | None:
        return next((m for m in self.models if m.name == name), None)

    @property
    def litellm_url(self) -> str:
        return local_url(self.litellm_address, self.litellm_port)

    @property
    def openwebui_url(self) -> str:
        return local_url(self.openwebui_address, self.openwebui_port)


# --- routes.json: the readiness gate's plan ---------------------------------------------
ROUTES_SCHEMA = 1


@dataclass
class Backend:
    """One vLLM unit serving a model, as this host's LiteLLM reaches it."""

    url: str
    served_name: str
    max_model_len: int
    local: bool                # on this host: drained by its own unit
    swap_group: str = ""       # one member of a swap group runs, the others stand by


@dataclass
class RoutesPlan:
    """LiteLLM's config with every local route (each entry's model_info names its
    backend as `sparkstack_backend`), each backend's probe target, and each profile's
    cloud-only entry for while none of its local models is ready."""

    config: dict
    backends: dict[str, Backend]
    standby: dict[str, dict]
    drain_timeout: int
    processes: int = 1   # LiteLLM processes that must each take the routes
    schema: int = ROUTES_SCHEMA

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str) -> RoutesPlan:
        data = json.loads(text)
        if data.get("schema") != ROUTES_SCHEMA:
            raise ValueError(f"routes plan schema {data.get('schema')!r}, expected "
                             f"{ROUTES_SCHEMA}: re-deploy this host")
        data["backends"] = {k: Backend(**b) for k, b in data["backends"].items()}
        return cls(**data)


BACKEND_KEY = "sparkstack_backend"   # model_info key naming a local route's backend

# --- LiteLLM's config.yaml, as the readiness gate writes it from the plan -----------------
CONFIG_HEADER = "# Written by sparkstack's readiness gate (sparkstack-routes) from routes.json.\n"


def assemble_config(plan: RoutesPlan, ready: set[str]) -> dict:
    """LiteLLM's config with the local routes whose backend is in `ready`. A profile
    left without a local route keeps its cloud model (the plan's lower-priority
    deployment), which then serves it directly."""
    config = copy.deepcopy(plan.config)
    config["model_list"] = [e for e in config["model_list"]
                            if e.get("model_info", {}).get(BACKEND_KEY) in (None, *ready)]
    return config


def render_config(config: dict) -> str:
    # JSON is YAML: neither side needs a YAML library for it.
    return CONFIG_HEADER + json.dumps(config, indent=1, sort_keys=True) + "\n"


def read_config_text(text: str) -> dict:
    return json.loads(text.removeprefix(CONFIG_HEADER)) if text.startswith(CONFIG_HEADER) \
        else {}


def local_routes(config: dict) -> set[tuple[str, str]]:
    """(profile, backend) of every local route in a LiteLLM config."""
    return {(e["model_name"], e["model_info"][BACKEND_KEY])
            for e in config.get("model_list", [])
            if BACKEND_KEY in e.get("model_info", {})}


# --- auto-routes.json: the auto profiles, for the router in LiteLLM's process -------------
# {"profiles": {NAME: {"names": [NAME and the aliases routed to it],
#                      "default": PROFILE, "hints": [PROFILE...] (those `#PROFILE` picks),
#                      "rules": [{"profile": P, "tools": bool, "min_prompt_tokens": N,
#                                 "max_prompt_tokens": N, "keywords": [...],
#                                 "pattern": REGEX}, ...] (first match wins),
#                      "classifier": null or {"url": CHAT_COMPLETIONS_URL,
#                                             "model": SERVED_NAME, "budget_ms": N,
#                                             "min_confidence": X,
#                                             "labels": {PROFILE: DESCRIPTION}}}}}
# Decisions in response headers and the request log:
AUTO_PROFILE_HEADER = "x-sparkstack-profile"   # the profile that served an auto request
AUTO_REASON_HEADER = "x-sparkstack-route"      # why: "rule: tools offered", ...


def render_auto_routes(profiles: dict[str, dict]) -> str:
    return json.dumps({"profiles": profiles}, indent=1, sort_keys=True) + "\n"


def read_auto_routes(text: str) -> dict[str, dict]:
    return json.loads(text)["profiles"]


# --- the request log (LiteLLM's database on each LiteLLM host) ---------------------------
REQUEST_LOG_TABLE = "sparkstack_requests"
# `final`: the request's outcome (its success, or the error its client got); the other
# rows are attempts a fallback or retry recovered from. `route`: local, fallback (a
# local profile answered by its cloud model) or cloud (a cloud profile).
REQUEST_LOG_COLUMNS = ("at", "trace_id", "final", "key_hash", "key_alias", "requested",
                       "served", "served_host", "route", "fallbacks", "input_tokens",
                       "output_tokens", "latency_ms", "ttft_ms", "stream", "status",
                       "error_class", "cost", "prompt", "answer", "auto_profile",
                       "auto_reason", "auto_ms", "process")
# what a spool kept by an older LiteLLM lacks at its end: auto_profile .. process
REQUEST_LOG_LATER_DEFAULTS = ("", "", None, "")
REQUEST_LOG_DDL = f"""
CREATE TABLE IF NOT EXISTS {REQUEST_LOG_TABLE} (
    id bigserial PRIMARY KEY, at timestamptz NOT NULL, trace_id text NOT NULL,
    final boolean NOT NULL, key_hash text NOT NULL, key_alias text NOT NULL,
    requested text NOT NULL, served text NOT NULL, served_host text NOT NULL,
    route text NOT NULL, fallbacks integer NOT NULL, input_tokens integer NOT NULL,
    output_tokens integer NOT NULL, latency_ms real, ttft_ms real, stream boolean NOT NULL,
    status text NOT NULL, error_class text NOT NULL, cost double precision NOT NULL,
    prompt jsonb, answer jsonb);
CREATE INDEX IF NOT EXISTS {REQUEST_LOG_TABLE}_at ON {REQUEST_LOG_TABLE} (at) WHERE final;
ALTER TABLE {REQUEST_LOG_TABLE} ADD COLUMN IF NOT EXISTS auto_profile text NOT NULL DEFAULT '',
    ADD COLUMN IF NOT EXISTS auto_reason text NOT NULL DEFAULT '',
    ADD COLUMN IF NOT EXISTS auto_ms real,
    ADD COLUMN IF NOT EXISTS process text NOT NULL DEFAULT '';
"""
# auto_profile: the profile an auto profile picked ('' for a request that named one),
# auto_reason: why (its layer and rule, never numbers), auto_ms: the classifier's time.
# process: the LiteLLM process that answered (1..N). status `cut`: a stream under way
# when its LiteLLM process died (recorded by that process's next start).
# Rollups of the final rows, kept by the request log's writer in the same transaction as
# the rows: counts per UTC hour, latency histograms per UTC day; `dim` is profile, host or
# key, `g` the group's name (as `sparkstack usage --by` shows it).
USAGE_HOURLY_TABLE = "sparkstack_usage_hourly"
USAGE_LATENCY_TABLE = "sparkstack_usage_latency"
USAGE_ROLLUP_DDL = f"""
CREATE TABLE IF NOT EXISTS {USAGE_HOURLY_TABLE} (
    hour timestamptz NOT NULL, dim text NOT NULL, g text NOT NULL, kind text NOT NULL,
    n bigint NOT NULL, input_tokens bigint NOT NULL, output_tokens bigint NOT NULL,
    cost double precision NOT NULL, PRIMARY KEY (hour, dim, g, kind));
CREATE TABLE IF NOT EXISTS {USAGE_LATENCY_TABLE} (
    day timestamptz NOT NULL, dim text NOT NULL, g text NOT NULL, ms integer NOT NULL,
    n bigint NOT NULL, PRIMARY KEY (day, dim, g, ms));
"""
