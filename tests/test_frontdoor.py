"""The front door's parts that need no host: nginx's config, the process units, the
memory the processes keep from the models, the gate making every process take new
routes, and the readiness wait over a process's unix socket."""

from __future__ import annotations

import http.server
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from sparkstack.render import template
from sparkstack.services.litellm import frontdoor
from sparkstack.settings import validate_inventory


def host(**settings):
    return validate_inventory({"spark1": {"secrets_dir": "/nonexistent", **settings}})[0]


def test_nginx_sends_to_each_process_then_to_the_queue_and_retries_only_unanswered():
    conf = frontdoor.render_conf(host(litellm_processes=3, litellm_timeout=120))
    servers = [line.split()[1] for line in conf.splitlines()
               if line.strip().startswith("server unix:")]
    assert servers == [f"unix:/run/sparkstack-litellm-{i}/http.sock" for i in (1, 2, 3)] + \
        ["unix:/run/sparkstack-litellm-queue.sock"]
    assert "server unix:/run/sparkstack-litellm-queue.sock backup max_fails=0;" in conf
    assert "proxy_next_upstream error non_idempotent;" in conf  # never a timeout or 5xx
    assert "proxy_buffering off;" in conf and "proxy_request_buffering on;" in conf
    assert "proxy_read_timeout 150s;" in conf
    assert "listen 127.0.0.1:4000 backlog=4096;" in conf


def test_nginx_listens_where_litellm_was_asked_to():
    assert frontdoor.listen(host(litellm_bind_address="::1", litellm_port=4100)) == \
        "[::1]:4100"
    assert frontdoor.listen(host(litellm_bind_address="0.0.0.0")) == "0.0.0.0:4000"


def test_the_processes_share_one_queue_socket_that_stays_non_blocking():
    s = host()
    unit = template("litellm/litellm@.service.j2", s=s, layout=s.layout, venv="/v",
                    state_dir="/st", secrets_env="/e", wait_ready="/w", gate="/g",
                    serve="/v/bin/python -m x", host_lib="/lib",
                    **frontdoor.process_unit_context(s))
    assert "Sockets=sparkstack-litellm-queue.socket" in unit
    assert "RuntimeDirectory=sparkstack-litellm-%i" in unit
    assert "--process %i" in unit and "Environment=SPARKSTACK_LITELLM_PROCESS=%i" in unit
    assert "--unix /run/sparkstack-litellm-%i/http.sock" in unit
    # systemd applies NonBlocking= at each process start to the socket all share
    assert "NonBlocking=true" in unit
    assert "request-log-%i.spool" in unit and "streams-%i.jsonl" in unit
    socket_unit = template("litellm/litellm-queue.socket.j2", s=s,
                           queue_path="/run/q.sock", first_unit="sparkstack-litellm@1.service")
    assert "ListenStream=/run/q.sock" in socket_unit and "SocketMode=0660" in socket_unit


def test_the_processes_memory_is_kept_from_the_models(tmp_path, monkeypatch):
    from pyinfra.api.exceptions import PyinfraError

    from sparkstack.host_facts import Snapshot
    from sparkstack.services.vllm import fit
    total_kib = 128 * 1024 * 1024
    meminfo = f"MemTotal: {total_kib} kB\nMemFree: {total_kib} kB\n" \
              f"MemAvailable: {total_kib} kB\n"
    monkeypatch.setattr(fit, "_inputs", lambda s, m: {
        "meminfo": meminfo, "download": {}, "unknown": "not read in this test"})
    state = Snapshot({"files": {}, "contents": {}, "units": {}, "users": {},
                      "packages": []}, [])
    models = [{"name": "qwen3-4b", "model": "org/a", "port": 8000,
               "gpu_memory_utilization": 0.5},
              {"name": "qwen3-coder-30b", "model": "org/b", "port": 8001,
               "gpu_memory_utilization": 0.44}]

    def plan(**settings):
        s = validate_inventory({"spark1": {"secrets_dir": str(tmp_path), "models": models,
                                           **settings}})[0]
        return fit.check(s, state, s.models, [])

    # 0.95 x 128 GiB = 121.6 GiB for models, which take 120.3: 2 processes (1.2 GiB)
    # leave room for them, 16 processes (9.6 GiB) do not
    assert "2 LiteLLM process(es): 1.2 GiB kept" in plan(litellm_processes=2).lines[-1]
    with pytest.raises(PyinfraError, match="qwen3-coder-30b .* does not fit"):
        plan(litellm_processes=16)
    assert all("fits" in line for line in plan(litellm_processes=16,
                                                roles=["vllm"]).lines)


def test_the_gate_has_every_running_process_take_the_routes(monkeypatch, tmp_path):
    from sparkstack_host import routes
    states = {"sparkstack-litellm@1.service": ("active", 101),
              "sparkstack-litellm@2.service": ("activating", 102),
              "sparkstack-litellm@3.service": ("failed", 0)}
    ran: list[tuple] = []

    def systemctl(*args):
        ran.append(args)
        if args[0] == "show":
            state, pid = states[args[-1]]
            return subprocess.CompletedProcess(args, 0, f"ActiveState={state}\nMainPID={pid}\n")
        return subprocess.CompletedProcess(args, 0, "running\n", "")

    asked = []
    monkeypatch.setattr(routes, "_systemctl", systemctl)
    monkeypatch.setattr(routes, "reload_all", lambda pids, config, timeout:
                        asked.append(dict(pids)) or [2])
    said = routes.apply_to_litellm(3, tmp_path / "config.yaml")
    assert asked == [{1: 101, 2: 102}]           # all at once, each confirmed
    assert ("restart", "sparkstack-litellm@2.service") in ran   # did not take them
    assert "3 is failed (reads them when it starts)" in said and "1 took them" in said


def test_every_process_is_signalled_before_any_is_waited_for(monkeypatch, tmp_path):
    from sparkstack_host import litellm_serve
    config = tmp_path / "config.yaml"
    config.write_text("model_list: []\n")
    signalled = []
    monkeypatch.setattr(litellm_serve.os, "kill", lambda pid, sig: signalled.append(pid))
    monkeypatch.setattr(litellm_serve, "applied_file",
                        lambda process: tmp_path / f"applied-{process}")
    import hashlib
    (tmp_path / "applied-1").write_text(hashlib.sha256(config.read_bytes()).hexdigest())
    missed = litellm_serve.reload_all({1: 11, 2: 12}, config, timeout=0.3)
    assert signalled == [11, 12] and missed == [2]


def test_a_gate_whose_reload_failed_is_finished_by_the_next_one(monkeypatch, tmp_path):
    """The gate writes config.yaml before it reloads the processes: when the reload
    fails (seen: the timer's gate could not read a process's confirmation), the next
    gate finds the config unchanged, and must still bring a process running on older
    routes up to date."""
    import hashlib
    from sparkstack_host import litellm_serve, routes
    config = tmp_path / "config.yaml"
    config.write_text("model_list: [new]\n")
    applied = {1: hashlib.sha256(config.read_bytes()).hexdigest(), 2: "older", 3: None}
    monkeypatch.setattr(routes, "applied_sha", applied.get)
    assert routes.processes_behind(3, config) == [2]   # 3 has not started: reads at start
    applied[2] = applied[1]
    assert routes.processes_behind(3, config) == []
    assert routes.processes_behind(3, tmp_path / "none.yaml") == []


def test_new_routes_start_with_no_backend_resting(caplog):
    """Each process's own cooldowns (backends it saw fail) are dropped with every new
    routes plan, so that all processes route as the gate just found, not as each one
    saw before: with them kept, a swap's traffic alternated between model and cloud.
    (LiteLLM itself is not in the controller's venv: the swap tests run the real one.)"""
    from sparkstack_host import litellm_serve

    class Cooldowns:  # LiteLLM 1.102's InMemoryCache, as far as this uses it
        def __init__(self):
            self.cache_dict = {"deployment:a:8000:cooldown": {"exception_status": 500}}

        def flush_cache(self):
            self.cache_dict.clear()

    cooldowns = Cooldowns()
    router = type("Router", (), {"cooldown_cache": type("C", (), {"in_memory_cache": cooldowns})})
    litellm_serve.forget_cooldowns(router)
    assert cooldowns.cache_dict == {}
    litellm_serve.forget_cooldowns(object())   # another release: said, not guessed
    assert "outlive a routes reload" in caplog.text


class Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200 if self.path == "/health/liveliness" else 404)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def test_wait_ready_asks_over_a_unix_socket(tmp_path):
    path = str(tmp_path / "http.sock")

    class UnixServer(http.server.HTTPServer):
        address_family = socket.AF_UNIX

        def server_bind(self):
            self.socket.bind(self.server_address)

        def get_request(self):
            conn, _ = self.socket.accept()
            return conn, ("local", 0)

    server = UnixServer(path, Health)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        run = [sys.executable, "-m", "sparkstack_host.wait_ready",
               "http://localhost/health/liveliness", "--timeout", "5", "--unix"]
        assert subprocess.run([*run, path], capture_output=True).returncode == 0
        missing = subprocess.run([*run[:-3], "--timeout", "1", "--unix",
                                  str(Path(tmp_path) / "none.sock")],
                                 capture_output=True, text=True)
        assert missing.returncode == 1 and "not ready after 1 s" in missing.stderr
    finally:
        server.shutdown()
