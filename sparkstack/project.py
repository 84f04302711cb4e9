"""Where sparkstack's own files are, and where it keeps the controller's.

`ROOT` holds the playbooks (deploy.py, swap.py, update.py), `templates/`, `files/`,
`defaults.yaml` and the host package's source (`checks/`): the checkout itself, or
for a sparkstack installed from a wheel (`pip install .`), the copy the wheel carries
as `sparkstack/project`. `WORKDIR` holds what the controller keeps (`.secrets/`, the
simulated Sparks' inventory, built host packages) and what relative paths in the
inventory mean: the checkout beside deploy.py, or the directory an installed
sparkstack is run from.
"""

from __future__ import annotations

from pathlib import Path

_CHECKOUT = Path(__file__).resolve().parent.parent
_PACKAGED = Path(__file__).resolve().parent / "project"


def _is_project(path: Path) -> bool:
    return (path / "deploy.py").is_file() and (path / "templates").is_dir()


ROOT = _CHECKOUT if _is_project(_CHECKOUT) else _PACKAGED
WORKDIR = _CHECKOUT if ROOT == _CHECKOUT else Path.cwd()
TEMPLATES = ROOT / "templates"
FILES = ROOT / "files"
DEFAULTS_FILE = ROOT / "defaults.yaml"
HOST_PACKAGE_SOURCE = ROOT / "checks"


def playbook(name: str) -> str:
    """deploy.py, swap.py or update.py, as pyinfra is given it."""
    return str(ROOT / name)


def controller_path(path: str) -> Path:
    """A path the inventory gives on the controller (secrets_dir, CA certificates)."""
    p = Path(path)
    return p if p.is_absolute() else WORKDIR / p
