"""Readiness probe against the vLLM stand-in over real sockets."""

import os
import socket
import subprocess
import sys

import pytest
from sparkstack_host.ready import probe, wait_ready


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def standin():
    procs = []

    def start(load="1", **env):
        port = free_port()
        proc = subprocess.Popen(
            [sys.executable, "-m", "sparkstack.simulated.vllm_standin", "serve", "org/model",
             "--served-model-name", "m1", "--max-model-len", "4096", "--host", "127.0.0.1",
             "--port", str(port)],
            env={**os.environ, "VLLM_API_KEY": "k",
                 "VLLM_STANDIN_LOAD_SECONDS": load, **env},
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        procs.append(proc)
        return proc, f"http://127.0.0.1:{port}"
    yield start
    for p in procs:
        p.kill()
        p.wait()


def test_loading_then_ready_with_progress(standin):
    proc, url = standin(load="2")
    assert probe(url, "m1", 4096, "k").state == "loading"
    lines = []
    result = wait_ready(url, "m1", 4096, api_key="k", timeout=30, progress=lines.append,
                        interval=0.2, unit_state=lambda: "active")
    assert result.ready, result
    assert result.seconds >= 1.5
    assert lines and "m1: loading (port not open yet)" in lines[0]


def test_wrong_max_model_len_or_name_or_key_is_unhealthy(standin):
    proc, url = standin(load="0")
    assert wait_ready(url, "m1", 4096, api_key="k", timeout=20, interval=0.2).ready
    assert probe(url, "m1", 8192, "k").detail == \
        "m1 serves max_model_len 4096, expected 8192"
    assert probe(url, "m2", 4096, "k").state == "unhealthy"
    assert probe(url, "m1", 4096, "wrong").detail == "/v1/models answered 401"


def test_a_failed_unit_is_reported_with_its_last_log_lines(standin):
    proc, url = standin(load="0.5", VLLM_STANDIN_FAIL="1")
    state = lambda: "failed" if proc.poll() is not None else "active"  # noqa: E731
    journal = lambda: proc.stdout.read().splitlines()  # noqa: E731
    result = wait_ready(url, "m1", 4096, api_key="k", timeout=30, interval=0.2,
                        unit_state=state, unit_journal=journal)
    assert result.state == "failed"
    assert any("No available memory for the cache blocks" in l for l in result.journal)


def test_a_model_that_never_loads_times_out_as_loading(standin):
    proc, url = standin(VLLM_STANDIN_NEVER_READY="1")
    result = wait_ready(url, "m1", 4096, api_key="k", timeout=1.5, interval=0.2,
                        unit_state=lambda: "active")
    assert result.state == "loading"
    assert result.detail.startswith("not ready after 2 s")


def test_a_completion_that_does_not_come_is_reported_within_seconds(monkeypatch):
    """`sparkstack health` once waited 31 s on a cloud that did not answer."""
    import time as clock
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    from threading import Thread

    from sparkstack_host import health

    class Silent(BaseHTTPRequestHandler):
        def do_POST(self):
            clock.sleep(2)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Silent)
    server.daemon_threads = True
    Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setattr(health, "COMPLETION_SECONDS", 0.5)
    start = clock.monotonic()
    ok, detail, advice = health.check_completion(
        f"http://127.0.0.1:{server.server_address[1]}", "k", "fast", "anthropic")
    assert not ok and detail == "no answer within 0.5 s" and "cloud key" in advice
    assert clock.monotonic() - start < 3
    server.shutdown()


@pytest.mark.parametrize("database, db, ok, says", [
    (False, None, True, "off: LiteLLM's own database is off (litellm_request_log: false)"),
    (True, "connected", True, "at /ui, its database connected"),
    (True, "Not connected", False, "/ui cannot log in: LiteLLM's database is 'Not connected'"),
])
def test_health_says_whether_litellms_ui_can_log_in(database, db, ok, says):
    """The quick start's LiteLLM UI answered "Not connected to DB!" at login."""
    import json
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    from threading import Thread

    from sparkstack_host import health

    class Readiness(BaseHTTPRequestHandler):
        def do_GET(self):
            body = json.dumps({"status": "healthy", "db": db}).encode()
            self.send_response(200 if self.path == "/health/readiness" else 404)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Readiness)
    Thread(target=server.serve_forever, daemon=True).start()
    result = health.check_litellm_ui(f"http://127.0.0.1:{server.server_address[1]}", database)
    server.shutdown()
    assert result[0] is ok and result[1].startswith(says)
    assert ("prisma" in result[2]) is (not ok)
