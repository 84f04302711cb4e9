"""The checks (GPU probe, fit estimate, readiness probe) installed on every Spark, so
`sparkstack health` runs them where the GPU and the models are."""

from pyinfra.operations import files

from ..settings import REPO_ROOT, HostSettings
from .base import Service, install

# Pinned: the checks' only dependencies.
REQUIREMENTS = "nvidia-ml-py==13.615.71\npsutil==7.2.2\nhttpx==0.28.1\n"
MODULES = ("__init__.py", "gpu.py", "fit.py", "ready.py", "health.py")


def deploy(s: HostSettings) -> None:
    svc = Service("checks", "root", s)
    install(svc, "the checks' Python packages", REQUIREMENTS)
    for module in MODULES:
        files.put(name=f"Install checks/{module}", src=str(REPO_ROOT / "checks" / module),
                  dest=f"{s['install_root']}/checks/checks/{module}", mode="644")
