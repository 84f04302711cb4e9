"""What every Spark needs before any service: trusted CAs, proxies, pip settings."""

from io import StringIO

from pyinfra.operations import apt, files, server

from ..fleet import Fleet
from ..render import ca_file_name, pip_conf, pip_constraints, template
from ..settings import REPO_ROOT, HostSettings, resolve_controller_path


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
    files.put(name="Write pip settings for sparkstack's venvs", src=StringIO(pip_conf(s)),
              dest=f"{root}/pip.conf", mode="644")
    files.put(name="Write pip constraints for sparkstack's venvs",
              src=StringIO(pip_constraints(s)), dest=f"{root}/pip-constraints.txt",
              mode="644")
    files.put(name="Install the readiness waiter used by the units",
              src=str(REPO_ROOT / "files" / "wait-http-ready"),
              dest=f"{root}/bin/wait-http-ready", mode="755")


def service_user(name: str, home: str) -> None:
    server.user(name=f"Create system user {name}", user=name, system=True, home=home,
                shell="/usr/sbin/nologin", create_home=False)
    files.directory(name=f"Create {home} for {name}", path=home, user=name, group=name,
                    mode="750")
