"""What every Spark needs before any service: trusted CAs, proxies, pip settings."""

import json
from dataclasses import dataclass
from io import StringIO

from pyinfra.operations import apt, files, server

from ..fleet import Fleet
from ..operations import unit_running, venv_install
from ..render import ca_file_name, env_file, pip_conf, pip_constraints, template, unit_name
from ..settings import REPO_ROOT, HostSettings, resolve_controller_path


def manifest(s: HostSettings, fleet: Fleet) -> dict:
    """What this host runs, for the checks on the host (no secrets)."""
    bind = fleet.vllm_bind_address(s)
    return {"host": s.name, "roles": s.roles,
            "models": [{"name": m["name"], "port": m["port"], "address": bind,
                        "max_model_len": m["max_model_len"],
                        "unit": f"{unit_name(m)}.service"} for m in s.models],
            "postgres_port": s["postgres_port"], "litellm_port": s["litellm_port"],
            "litellm_address": s["litellm_bind_address"],
            "openwebui_port": s["openwebui_port"],
            "openwebui_address": s["openwebui_bind_address"],
            "config_root": s["config_root"]}


def deploy(s: HostSettings, fleet: Fleet) -> None:
    ca_changed = False
    for i, path in enumerate(s["extra_ca_certificates"]):
        op = files.put(name=f"Trust extra CA certificate {path}",
                       src=str(resolve_controller_path(path)),
                       dest=f"/usr/local/share/ca-certificates/{ca_file_name(path, i)}",
                       user="root", group="root", mode="644")
        ca_changed = ca_changed or op.will_change
    if ca_changed:
        server.shell(name="Rebuild the CA bundle", commands=["update-ca-certificates"])

    files.put(name="Configure apt's proxy",
              src=StringIO(template("base/apt-proxy.conf.j2", s=s)),
              dest="/etc/apt/apt.conf.d/80sparkstack-proxy", mode="644")
    apt.packages(name="Install Python venv support and sudo",
                 packages=["python3-venv", "sudo"], update=True, cache_time=86400)

    root = s["install_root"]
    files.directory(name=f"Create {root}", path=root, mode="755")
    # root-only: a proxy URL may carry credentials (pip runs as root)
    files.put(name="Write pip settings for sparkstack's venvs", src=StringIO(pip_conf(s)),
              dest=f"{root}/pip.conf", mode="600")
    files.put(name="Write pip constraints for sparkstack's venvs",
              src=StringIO(pip_constraints(s)), dest=f"{root}/pip-constraints.txt",
              mode="644")
    files.put(name="Describe this host's services for the checks",
              src=StringIO(json.dumps(manifest(s, fleet), indent=1, sort_keys=True) + "\n"),
              dest=f"{s['config_root']}/manifest.json", mode="644")
    files.put(name="Install the readiness waiter used by the units",
              src=str(REPO_ROOT / "files" / "wait-http-ready"),
              dest=f"{root}/bin/wait-http-ready", mode="755")


@dataclass(frozen=True)
class Service:
    """Where one service lives on a host: its user, venv, config and state folders."""

    name: str
    user: str
    s: HostSettings

    @property
    def state_dir(self) -> str:
        return f"{self.s['state_root']}/{self.name}"

    @property
    def venv(self) -> str:
        return f"{self.s['install_root']}/{self.name}/venv"

    @property
    def conf_dir(self) -> str:
        return f"{self.s['config_root']}/{self.name}"

    @property
    def secrets_env(self) -> str:
        return f"{self.conf_dir}/secrets.env"

    @property
    def wait_script(self) -> str:
        return f"{self.s['install_root']}/bin/wait-http-ready"


def prepare(s: HostSettings, name: str, user: str) -> Service:
    """Create the service's system user and its state folder."""
    svc = Service(name, user, s)
    server.user(name=f"Create system user {user}", user=user, system=True,
                home=svc.state_dir, shell="/usr/sbin/nologin", create_home=False)
    files.directory(name=f"Create {svc.state_dir} for {user}", path=svc.state_dir,
                    user=user, group=user, mode="750")
    return svc


def install(svc: Service, label: str, requirements: str):
    return venv_install(name=f"Install {label}", venv=svc.venv, requirements=requirements,
                        pip_conf=f"{svc.s['install_root']}/pip.conf",
                        constraints="\n".join(svc.s["pip_constraints"]))


def write_secrets(svc: Service, label: str, values: dict[str, str]):
    return files.put(name=f"Write {label} secrets (root-only)", src=StringIO(env_file(values)),
                     dest=svc.secrets_env, user="root", group="root", mode="600")


def write_unit(svc: Service, unit: str, template_name: str, **context):
    return files.put(
        name=f"Write unit {unit}",
        src=StringIO(template(template_name, s=svc.s, venv=svc.venv,
                              state_dir=svc.state_dir, secrets_env=svc.secrets_env,
                              wait_script=svc.wait_script, **context)),
        dest=f"/etc/systemd/system/{unit}", mode="644")


def run_unit(unit: str, label: str, unit_file, restart_on: list) -> None:
    """Keep the unit running; restart only when its file or one of the `restart_on`
    operations changes something."""
    unit_running(name=label, unit=unit, daemon_reload=unit_file.will_change,
                 restarted=unit_file.will_change or any(op.will_change for op in restart_on))


def activate(svc: Service, unit: str, template_name: str, label: str, restart_on: list,
             **context) -> None:
    run_unit(unit, label, write_unit(svc, unit, template_name, **context), restart_on)


def loopback_for(bind: str) -> str:
    """Where a check on the host itself reaches a service bound to `bind`."""
    return "127.0.0.1" if bind in ("0.0.0.0", "127.0.0.1") else bind
