"""`sparkstack-wait-ready --own-port` gives up fast when another user's process holds its
service's port (the service cannot listen there, and must not wait out its timeout)."""

import os
import shutil
import socket
import subprocess
import sys
import time

import pytest
from sparkstack_host.wait_ready import held_by_a_stranger

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"),
                                reason="listening as another user needs root and setpriv")
LISTEN = ("import socket, sys, time; s = socket.socket(); s.bind(('127.0.0.1', 0)); "
          "s.listen(); print(s.getsockname()[1], flush=True); time.sleep(60)")


def stranger() -> tuple[subprocess.Popen, int]:
    """A process of user nobody listening on a free port."""
    proc = subprocess.Popen(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                             sys.executable, "-c", LISTEN], stdout=subprocess.PIPE, text=True)
    return proc, int(proc.stdout.readline())


def test_a_port_is_held_by_a_stranger_only_when_another_user_listens():
    proc, port = stranger()
    try:
        assert held_by_a_stranger(port)
    finally:
        proc.kill()
        proc.wait()
    assert not held_by_a_stranger(port)  # nobody listens: keep waiting
    with socket.socket() as mine:
        mine.bind(("127.0.0.1", port))
        mine.listen()
        assert not held_by_a_stranger(port)  # the service's own user listens


def wait(port: int, *flags: str) -> tuple[subprocess.CompletedProcess, float]:
    service = subprocess.Popen(["sleep", "60"])
    start = time.monotonic()
    try:
        proc = subprocess.run([sys.executable, "-m", "sparkstack_host.wait_ready",
                               f"http://127.0.0.1:{port}/health", "--timeout", "8",
                               "--pid", str(service.pid), *flags],
                              capture_output=True, text=True)
    finally:
        service.kill()
    return proc, time.monotonic() - start


def test_the_wait_fails_in_seconds_and_says_why_when_a_stranger_holds_the_port():
    proc, port = stranger()
    try:
        fast, took = wait(port, "--own-port")
        slow, _ = wait(port)  # a socket-activated service: systemd holds its port
    finally:
        proc.kill()
    assert fast.returncode == 1 and took < 7.5
    assert f"port {port} is held by another process" in fast.stderr
    assert slow.returncode == 1 and "not ready after 8 s" in slow.stderr
