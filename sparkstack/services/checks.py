"""The checks (GPU probe, fit estimate, readiness probe, readiness gate) installed on
every Spark, so `sparkstack health` and the units run them where the GPU and the models
are."""

from io import StringIO

from pyinfra.operations import files

from ..render import template
from ..settings import REPO_ROOT, HostSettings
from .base import Service, install

# Pinned: the checks' only dependencies.
REQUIREMENTS = "nvidia-ml-py==13.615.71\npsutil==7.2.2\nhttpx==0.28.1\n"
MODULES = ("__init__.py", "envfile.py", "gpu.py", "fit.py", "ready.py", "health.py",
           "routes.py")


def deploy(s: HostSettings) -> None:
    svc = Service("checks", "root", s)
    install(svc, "the checks' Python packages", REQUIREMENTS)
    for module in MODULES:
        files.put(name=f"Install checks/{module}", src=str(REPO_ROOT / "checks" / module),
                  dest=f"{s['install_root']}/checks/checks/{module}", mode="644")
    files.put(name="Install the readiness gate command (sparkstack-routes)",
              src=StringIO(template("base/sparkstack-routes.j2", s=s)),
              dest=routes_command(s), mode="755")


def routes_command(s: HostSettings) -> str:
    return f"{s['install_root']}/bin/sparkstack-routes"
