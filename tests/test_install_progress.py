"""A long install says what it does: uv's own lines about what it resolved and installed,
and how much is installed and how fast every few seconds; uv's failure is its own."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from sparkstack.operations import install_with_progress
from sparkstack.simulated.engine import _metadata_wheel


def test_an_install_reports_its_progress_and_its_failure(tmp_path):
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    _metadata_wheel(wheels, "sparkstack-demo", "1.0", (), "a demo package")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    env_file = tmp_path / "uv.env"  # what the deploy writes, offline: the folder alone
    env_file.write_text(f"UV_FIND_LINKS={wheels}\nUV_OFFLINE=1\nUV_NO_PROGRESS=1\n"
                        f"UV_CACHE_DIR={tmp_path / 'cache'}\n")
    constraints = tmp_path / "constraints.txt"
    constraints.write_text("sparkstack-demo<3\n")
    (venv / "sparkstack-requirements.txt").write_text("sparkstack-demo==1.0\n")
    uv = shutil.which("uv", path=str(Path(sys.executable).parent)) or shutil.which("uv")
    command = install_with_progress(str(venv), uv, str(env_file), str(constraints),
                                    "demo 1.0", every=1)
    done = subprocess.run(command, shell=True, capture_output=True, text=True,
                          env={"PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert any(line.startswith("demo 1.0: Resolved 1 package") for line in lines), lines
    assert "demo 1.0: + sparkstack-demo==1.0" in lines
    (venv / "sparkstack-requirements.txt").write_text("sparkstack-demo==2.0\n")
    failed = subprocess.run(command, shell=True, capture_output=True, text=True,
                            env={"PATH": "/usr/bin:/bin"})
    assert failed.returncode != 0
    assert "demo 1.0: error: No solution found when resolving dependencies" in \
        failed.stdout.splitlines(), failed.stdout
    assert "there is no version of sparkstack-demo==2.0" in failed.stdout
