"""A long install says what it does: pip's own lines about what it fetches and how big,
and how much is installed and how fast every few seconds; pip's failure is its own."""

from __future__ import annotations

import subprocess
import sys

from sparkstack.operations import pip_with_progress
from sparkstack.simulated.engine import _metadata_wheel


def test_an_install_reports_its_progress_and_its_failure(tmp_path):
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    _metadata_wheel(wheels, "sparkstack-demo", "1.0", (), "a demo package")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    conf = tmp_path / "pip.conf"
    conf.write_text(f"[global]\nno-index = true\nfind-links = {wheels}\n")
    (venv / "sparkstack-requirements.txt").write_text("sparkstack-demo==1.0\n")
    command = pip_with_progress(str(venv), str(conf), "demo 1.0", every=1)
    done = subprocess.run(command, shell=True, capture_output=True, text=True,
                          env={"PATH": "/usr/bin:/bin", "PIP_CONSTRAINT": ""})
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("demo 1.0: Processing ") and "sparkstack_demo-1.0" in lines[0]
    assert "demo 1.0: Successfully installed sparkstack-demo-1.0" in lines
    (venv / "sparkstack-requirements.txt").write_text("sparkstack-demo==2.0\n")
    failed = subprocess.run(command, shell=True, capture_output=True, text=True,
                            env={"PATH": "/usr/bin:/bin", "PIP_CONSTRAINT": ""})
    assert failed.returncode != 0
    assert "demo 1.0: ERROR: No matching distribution found for sparkstack-demo==2.0" in \
        failed.stdout
