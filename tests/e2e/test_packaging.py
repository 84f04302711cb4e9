"""sparkstack installed from wheels (`pip install ./checks .`, not editable) works on
its own: the `sparkstack` command, and pyinfra running the installed deploy.py with
the templates, files, defaults and host package source the wheel carries."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.helpers import REPO

pytestmark = pytest.mark.e2e


def run(*args: str, cwd: Path, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=600, **kw)


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    venv = tmp_path_factory.mktemp("installed") / "venv"
    run(sys.executable, "-m", "venv", str(venv), cwd=REPO).check_returncode()
    before = run("git", "status", "--porcelain", cwd=REPO).stdout
    pip = run(str(venv / "bin" / "pip"), "install", "--quiet", "--disable-pip-version-check",
              "./checks", ".", cwd=REPO)
    assert pip.returncode == 0, pip.stderr[-3000:]
    # what the build wrote in the checkout is ignored by git
    assert run("git", "status", "--porcelain", cwd=REPO).stdout == before
    return venv


def test_the_installed_package_carries_what_it_needs(installed, tmp_path):
    probe = ("from sparkstack.project import ROOT; from sparkstack.render import template; "
             "from sparkstack.host_package import wheel; "
             "from sparkstack.settings import validate_inventory; "
             "h = validate_inventory({'s': {}})[0]; "
             "print(ROOT); print(wheel().name); "
             "print('ProcSubset=' in template('base/sandbox.j2', writable=['/x'], devices=[], "
             "jit=False))")
    out = run(str(installed / "bin" / "python"), "-c", probe, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    root, wheel, rendered = out.stdout.split()
    assert root.startswith(str(installed)) and root.endswith("sparkstack/project")
    assert wheel.startswith("sparkstack_host-") and rendered == "True"
    assert (tmp_path / "build" / "host-package").is_dir()  # kept where it was run


def test_the_installed_deploy_runs_under_pyinfra_and_the_cli(installed, tmp_path):
    (tmp_path / "inventory.py").write_text(
        'sparks = [("@local", {"models": "not a list"})]\n')
    deploy = next(installed.glob("lib/python*/site-packages/sparkstack/project/deploy.py"))
    for command in ([str(installed / "bin" / "pyinfra"), "-y", "inventory.py", str(deploy)],
                    [str(installed / "bin" / "sparkstack"), "deploy", "-i", "inventory.py"]):
        out = run(*command, cwd=tmp_path)
        assert out.returncode != 0
        assert "invalid inventory, no host was changed" in out.stdout + out.stderr
        assert "models = 'not a list': must be a list of model entries" in out.stdout + out.stderr


def test_every_package_of_sparkstack_is_in_the_wheel():
    """pyproject lists the packages by name: a new one left out is missing from an
    installed sparkstack (its deploy or `update` then fails to import)."""
    import tomllib
    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text())
                 ["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(REPO).parts)
             for p in (REPO / "sparkstack").rglob("__init__.py")}
    assert found <= listed, sorted(found - listed)
