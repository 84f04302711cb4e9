"""What every Spark needs before any service (trusted CAs, proxies, pip settings, the
host package, the manifest), how a service describes itself (`ServiceInfo`), and the
Service helper every service deploys with. It knows no concrete service: the registry
(`sparkstack.services.registry`) lists them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from io import StringIO

from pyinfra.operations import server
from sparkstack_host.contract import (
    DEFAULT_MASTER_PORT,
    UNIT_DIR,
    WAIT_READY,
    Layout,
    Manifest,
    ManifestModel,
    ManifestPart,
    write_env_file,
)

from ..fleet import Fleet
from ..host_facts import snapshot
from ..host_package import wheel
from ..operations import (
    deb_packages,
    ensure_dir,
    put_file,
    system_user,
    unit_running,
    venv_digest,
    venv_install,
    venv_switch,
    wheel_unpacked,
)
from ..render import ca_file_name, pip_conf, pip_constraints, template
from ..settings import HostSettings, SettingsError, resolve_controller_path


@dataclass
class Deployment:
    """What a service's deploy is given: the host's settings, the fleet, the host's
    secrets, and the services this host runs (from the registry)."""

    s: HostSettings
    fleet: Fleet
    secrets: dict
    services: list[ServiceInfo]
    choose: dict[str, str] = field(default_factory=dict)   # swap group -> member to run

    @property
    def databases(self) -> list[str]:
        """The PostgreSQL databases (and roles) of the services this host runs."""
        return [svc.database for svc in self.services if svc.database]


@dataclass(frozen=True)
class ServiceInfo:
    """A service as the rest of sparkstack sees it: the deploy runs `deploy` on each host
    whose roles name `role` (then `finish`, once every service had its turn); the update
    compares `requirements` (what its venv is built from) and restarts `units` after a
    rollback; the bind check reads `bind_setting`; backups dump `database`."""

    role: str
    label: str
    deploy: Callable[[Deployment], None]
    requirements: Callable[[HostSettings], str] | None = None
    units: Callable[[HostSettings], list[str]] = lambda s: []
    bind_setting: str = ""
    database: str = ""
    finish: Callable[[Deployment], None] | None = None


def manifest(s: HostSettings, fleet: Fleet, databases: list[str]) -> Manifest:
    """What this host runs, for the programs on the host and for later deploys (no
    secrets)."""
    bind = fleet.vllm_bind_address(s)
    return Manifest(
        host=s.name, roles=s.roles, layout=s.layout, databases=databases,
        models=[ManifestModel(name=m["name"], model=m["model"], port=m["port"],
                              address=bind, max_model_len=m["max_model_len"],
                              gpu_memory_utilization=m["gpu_memory_utilization"],
                              swap_group=m["swap_group"],
                              cluster_nodes={h: fleet[h]["link_address"]
                                             for h in m["cluster"]["hosts"][1:]}
                              if m.get("cluster") else {},
                              master_port=master_port(m))
                for m in s.models],
        parts=[ManifestPart(model=m["name"], leader=leader.name,
                            leader_address=leader["link_address"],
                            master_port=master_port(m), rank=rank)
               for leader, m, rank in fleet.cluster_parts(s)],
        postgres_port=s["postgres_port"], litellm_address=s["litellm_bind_address"],
        litellm_port=s["litellm_port"], openwebui_address=s["openwebui_bind_address"],
        openwebui_port=s["openwebui_port"])


def master_port(model: dict) -> int:
    """Where a model across Sparks has its nodes join its leader (0: one Spark)."""
    if not model.get("cluster"):
        return 0
    return model["cluster"].get("master_port", DEFAULT_MASTER_PORT)


def check_bind_addresses(d: Deployment) -> None:
    """Refuse, before anything changes, an address this host cannot listen on (a
    service bound to it would never start, and LiteLLM's socket would take the front
    door down). vLLM's address is the fleet's choice (loopback unless another Spark's
    LiteLLM routes to it)."""
    s = d.s
    wanted = [(svc.bind_setting, s[svc.bind_setting]) for svc in d.services
              if svc.bind_setting]
    if s.has("vllm"):
        wanted.append(("vllm_bind_address", d.fleet.vllm_bind_address(s)))
    found = snapshot()
    for key, address in wanted:
        if not found.can_bind(address):
            raise SettingsError([
                f"host {s.name}: {key} = {address!r}: not an address of this host; "
                f"use one of {', '.join(found.data.get('addresses', []))} or 0.0.0.0"])


def deploy(d: Deployment):
    """Prepare the host; returns the operation installing the host package."""
    s = d.s
    check_bind_addresses(d)
    ca_changed = False
    for i, path in enumerate(s["extra_ca_certificates"]):
        op = put_file(name=f"Trust extra CA certificate {path}",
                       src=str(resolve_controller_path(path)),
                       dest=f"/usr/local/share/ca-certificates/{ca_file_name(path, i)}",
                       user="root", group="root", mode="644")
        ca_changed = ca_changed or op.will_change
    if ca_changed:
        server.shell(name="Rebuild the CA bundle", commands=["update-ca-certificates"])

    put_file(name="Configure apt's proxy",
              src=StringIO(template("base/apt-proxy.conf.j2", s=s)),
              dest="/etc/apt/apt.conf.d/80sparkstack-proxy", mode="644")
    deb_packages(name="Install Python venv support and sudo",
                 packages=["python3-venv", "sudo"])

    layout = s.layout
    ensure_dir(name=f"Create {layout.install_root}", path=layout.install_root, mode="755")
    # root-only: a proxy URL may carry credentials (pip runs as root)
    put_file(name="Write pip settings for sparkstack's venvs", src=StringIO(pip_conf(s)),
             dest=layout.pip_conf, mode="600")
    put_file(name="Write pip constraints for sparkstack's venvs",
             src=StringIO(pip_constraints(s)), dest=layout.pip_constraints, mode="644")
    put_file(name="Describe this host's services (manifest)",
             src=StringIO(manifest(s, d.fleet, d.databases).to_json()),
             dest=layout.manifest, mode="644")
    return install_host_package(s)


def host_wheel(layout: Layout) -> str:
    """Upload the host package's wheel; its path on the host."""
    built = wheel()
    dest = f"{layout.host_wheels}/{built.name}"
    put_file(name=f"Upload the host package {built.name}", src=str(built.path), dest=dest,
             mode="644")
    return dest


def host_requirements(s: HostSettings) -> str:
    built = wheel()
    return (f"sparkstack-host[checks] @ file://{s.layout.host_wheels}/{built.name}\n"
            f"# sha256 {built.sha256}\n")


def install_host_package(s: HostSettings):
    """The host package with its checks' pinned dependencies, in the host venv."""
    host_wheel(s.layout)
    return install(Service("host", "root", s), f"the host package ({wheel().sha256[:12]})",
                   host_requirements(s))


def venv_id(s: HostSettings, requirements: str) -> str:
    """The name of the venv built from `requirements` with this host's pip settings."""
    return venv_digest(requirements, pip_conf(s), "\n".join(s["pip_constraints"]))


def host_package_alone(s: HostSettings):
    """The host package without its dependencies, for a service's process that imports
    it on PYTHONPATH (LiteLLM's launcher); its folder and the operation."""
    built, layout = wheel(), s.layout
    target = layout.host_lib(built.sha256)
    op = wheel_unpacked(name=f"Unpack the host package {built.sha256[:12]} for LiteLLM",
                        wheel=f"{layout.host_wheels}/{built.name}", sha256=built.sha256,
                        target=target, pip=f"{layout.host_venv}/bin/pip")
    return target, op


@dataclass(frozen=True)
class Service:
    """Where one service lives on a host: its user, venv, config and state folders."""

    name: str
    user: str
    s: HostSettings

    @property
    def layout(self) -> Layout:
        return self.s.layout

    @property
    def state_dir(self) -> str:
        return self.layout.state_dir(self.name)

    @property
    def venv(self) -> str:
        return self.layout.venv(self.name)

    @property
    def conf_dir(self) -> str:
        return self.layout.conf_dir(self.name)

    @property
    def secrets_env(self) -> str:
        return self.layout.secrets_env(self.name)


def prepare(s: HostSettings, name: str, user: str) -> Service:
    """Create the service's system user and its state folder."""
    svc = Service(name, user, s)
    system_user(name=f"Create system user {user}", user=user, home=svc.state_dir)
    ensure_dir(name=f"Create {svc.state_dir} for {user}", path=svc.state_dir, user=user,
               group=user, mode="750")
    return svc


def install(svc: Service, label: str, requirements: str):
    """Build the service's venv for `requirements` beside the one in use, then switch to
    it; returns the switch (what restarts the service)."""
    s, layout = svc.s, svc.layout
    digest = venv_id(s, requirements)
    venv_install(name=f"Install {label}", venv=layout.venv_version(svc.name, digest),
                 requirements=requirements, pip_conf=layout.pip_conf, label=label)
    return venv_switch(name=f"Use {label}", service_root=layout.service_root(svc.name),
                       digest=digest)


def write_secrets(svc: Service, label: str, values: dict[str, str]):
    return put_file(name=f"Write {label} secrets (root-only)",
                    src=StringIO(write_env_file(values)), dest=svc.secrets_env,
                    user="root", group="root", mode="600")


def write_unit(svc: Service, unit: str, template_name: str, **context):
    return put_file(
        name=f"Write unit {unit}",
        src=StringIO(template(template_name, s=svc.s, layout=svc.layout, venv=svc.venv,
                              state_dir=svc.state_dir, secrets_env=svc.secrets_env,
                              wait_ready=svc.layout.host_program(WAIT_READY), **context)),
        dest=f"{UNIT_DIR}/{unit}", mode="644")


def run_unit(unit: str, label: str, unit_file, restart_on: list,
             restart: bool = False) -> None:
    """Keep the unit running; restart only when its file or one of the `restart_on`
    operations changes something (or `restart` says so)."""
    unit_running(name=label, unit=unit, daemon_reload=unit_file.will_change,
                 restarted=restart or unit_file.will_change
                 or any(op.will_change for op in restart_on))


def activate(svc: Service, unit: str, template_name: str, label: str, restart_on: list,
             **context) -> None:
    run_unit(unit, label, write_unit(svc, unit, template_name, **context), restart_on)
