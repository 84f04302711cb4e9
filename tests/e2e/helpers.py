"""Helpers for end-to-end tests on simulated Sparks: run the real deploy, reach
loopback-bound services through SSH tunnels (as a user would), read unit state."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from sparkstack.simulated.fleet import SSH_KEY, SimHost, ssh

REPO = Path(__file__).resolve().parents[2]
PYINFRA = str(Path(sys.executable).with_name("pyinfra"))


@dataclass
class DeployResult:
    returncode: int
    output: str
    seconds: float

    def grand_total(self) -> dict[str, str]:
        """The summary row: operations, changed, errors, unchanged."""
        match = re.search(r"Grand total\s+(\S+)\s+(\S+)\s+(\S+)\s+(\S+)", self.output)
        assert match, f"no summary in deploy output:\n{self.output[-3000:]}"
        return dict(zip(("operations", "changed", "errors", "unchanged"), match.groups()))


def run_deploy(inventory: Path, *extra: str, timeout: float = 1500,
               checkout: Path = REPO) -> DeployResult:
    """pyinfra's deploy of `inventory`, from `checkout` (a copy of this one, with
    sparkstack imported from it, when given)."""
    start = time.monotonic()
    env = {**os.environ, "PYTHONPATH": str(checkout)} if checkout != REPO else None
    proc = subprocess.run([PYINFRA, "-y", str(inventory), "deploy.py", *extra],
                          cwd=checkout, capture_output=True, text=True, timeout=timeout,
                          env=env)
    return DeployResult(proc.returncode, proc.stdout + proc.stderr,
                        time.monotonic() - start)


def checkout_copy(into: Path) -> Path:
    """A copy of this checkout's tracked files (what a newer sparkstack would be), for
    a test that changes sparkstack without touching the repository."""
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others",
                            "--exclude-standard"], cwd=REPO, capture_output=True,
                           check=True).stdout.decode().split("\0")
    for name in filter(None, files):
        source = REPO / name
        if source.is_file():
            (into / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, into / name)
    return into


class Tunnel:
    """`ssh -L` from a free local port to host:remote_port (loopback on the host)."""

    def __init__(self, host: SimHost, remote_port: int):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.proc = subprocess.Popen(
            ["ssh", "-N", "-i", str(SSH_KEY), "-o", "StrictHostKeyChecking=no", "-o",
             "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR", "-o",
             "ExitOnForwardFailure=yes", "-L",
             f"127.0.0.1:{self.port}:127.0.0.1:{remote_port}", f"root@{host.address}"])
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"tunnel to {host.name}:{remote_port} did not open")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


def unit_starts(host: SimHost, units: list[str]) -> dict[str, str]:
    """Each unit's main-process start time (changes exactly when it (re)starts)."""
    script = ("for u in " + " ".join(units) + "; do echo $u "
              "$(systemctl show -p ExecMainStartTimestampMonotonic --value $u); done")
    return dict(line.split() for line in ssh(host, script).stdout.splitlines())
