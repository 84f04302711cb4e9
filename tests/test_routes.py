"""The readiness gate's assembly of LiteLLM's config (sparkstack_host.routes): local
routes only for ready backends, profiles without one go straight to the cloud."""

import pytest
from sparkstack_host import routes
from sparkstack_host.contract import (
    Backend,
    Layout,
    RoutesPlan,
    assemble_config,
    local_routes,
    render_config,
)

from sparkstack.fleet import Fleet
from sparkstack.render import template
from sparkstack.services.litellm import routes_plan
from sparkstack.settings import validate_inventory

TWO_SPARKS = {"a": {"address": "10.0.0.1", "cloud_api_key": "k"},
              "b": {"address": "10.0.0.2", "roles": ["vllm"], "models": [
                  {"name": "qwen3-4b", "model": "Qwen/Qwen3-4B-Instruct-2507",
                   "port": 8000}]}}


@pytest.fixture
def plan():
    fleet = Fleet(validate_inventory(TWO_SPARKS))
    return routes_plan(fleet["a"], fleet)


def names_and_bases(config: dict) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for e in config["model_list"]:
        out.setdefault(e["model_name"], []).append(
            e["model_info"].get("sparkstack_backend", e["litellm_params"]["model"]))
    return out


def test_plan_names_every_backend_with_what_its_probe_expects(plan):
    assert plan.backends == {
        "a:8000": Backend("http://127.0.0.1:8000", "qwen3-4b", 32768, local=True),
        "a:8001": Backend("http://127.0.0.1:8001", "qwen3-coder-30b", 65536, local=True),
        "b:8000": Backend("http://10.0.0.2:8000", "qwen3-4b", 32768, local=False)}
    assert set(plan.standby) == {"fast", "expert", "code", "auto", "claude-*"}


def test_the_plan_survives_its_file_format(plan):
    assert RoutesPlan.from_json(plan.to_json()) == plan


def test_all_ready_is_the_full_config(plan):
    assert assemble_config(plan, set(plan.backends)) == plan.config


def test_nothing_ready_sends_every_local_profile_to_its_cloud_model(plan):
    config = assemble_config(plan, set())
    got = names_and_bases(config)
    assert got["fast"] == ["openrouter/qwen/qwen3-4b:free"]
    assert got["code"] == ["openrouter/qwen/qwen3-coder:free"]
    assert got["claude-*"] == ["openrouter/qwen/qwen3-coder:free"]
    assert got["cloud"] == ["openrouter/qwen/qwen3-235b-a22b:free"]
    assert not local_routes(config)


def test_one_ready_backend_keeps_the_profile_local_and_its_fallback(plan):
    config = assemble_config(plan, {"b:8000"})
    got = names_and_bases(config)
    # the local model first (order 1), its cloud model only when it fails (order 2)
    assert got["fast"] == ["b:8000", "openrouter/qwen/qwen3-4b:free"]
    assert [e["litellm_params"]["order"] for e in config["model_list"]
            if e["model_name"] == "fast"] == [1, 2]
    assert got["expert"] == ["openrouter/qwen/qwen3-235b-a22b:free"]
    # no internal route for a client to call: the model names are the profiles
    assert set(got) == {"fast", "expert", "code", "cloud", "auto", "claude-*"}


def test_config_written_by_the_gate_is_yaml_and_tells_what_is_routed(plan, tmp_path):
    import yaml
    path = tmp_path / "config.yaml"
    path.write_text(render_config(assemble_config(plan, {"a:8000"})))
    assert yaml.safe_load(path.read_text()) == assemble_config(plan, {"a:8000"})
    assert routes.routed_backends(path) == {"a:8000"}
    assert local_routes(routes.read_config(path)) == {("fast", "a:8000"), ("auto", "a:8000")}  # auto: served as fast


def layout_in(tmp_path) -> Layout:
    return Layout(install_root=str(tmp_path / "opt"), config_root=str(tmp_path / "etc"),
                  state_root=str(tmp_path / "var"), runtime_dir=str(tmp_path / "run"))


def test_gate_without_a_plan_changes_nothing(tmp_path):
    lines = []
    assert routes.gate(layout_in(tmp_path), log=lines.append) is False
    assert "nothing to do" in lines[0]
    assert list(tmp_path.iterdir()) == []


def test_gate_writes_only_ready_routes_and_keeps_a_drained_model_out(plan, tmp_path,
                                                                     monkeypatch):
    layout = layout_in(tmp_path)
    conf = tmp_path / "etc" / "litellm"
    conf.mkdir(parents=True)
    (conf / "routes.json").write_text(plan.to_json())
    (conf / "secrets.env").write_text('VLLM_API_KEY="k"\n')
    answering = {"http://127.0.0.1:8000", "http://10.0.0.2:8000"}
    monkeypatch.setattr(routes, "probe", lambda url, *a, **k: type(
        "R", (), {"ready": url in answering, "state": "loading", "detail": "port closed"}))
    lines = []
    config = conf / "config.yaml"
    assert routes.gate(layout, log=lines.append)
    assert routes.routed_backends(config) == {"a:8000", "b:8000"}
    assert "routes: a:8001: not routed, loading (port closed)" in lines
    # drained: out although it still answers, until its unit starts again
    routes.gate(layout, drain=["qwen3-4b"], log=lines.append)
    assert routes.routed_backends(config) == {"b:8000"}
    assert (tmp_path / "run" / "drained" / "a:8000").exists()
    routes.gate(layout, log=lines.append)
    assert routes.routed_backends(config) == {"b:8000"}
    assert routes.gate(layout, undrain=["qwen3-4b"], log=lines.append)
    assert routes.routed_backends(config) == {"a:8000", "b:8000"}
    assert routes.gate(layout, log=lines.append) is False
    # a model on another Spark is drained by its backend id, and a deploy's
    # --undrain-remote lets it back in once ready
    routes.gate(layout, drain=["b:8000"], log=lines.append)
    assert routes.routed_backends(config) == {"a:8000"}
    routes.gate(layout, undrain_remote=True, log=lines.append)
    assert routes.routed_backends(config) == {"a:8000", "b:8000"}


def test_vllm_units_gate_litellm_routes_only_where_litellm_runs():
    from sparkstack.services.vllm import UNIT_TEMPLATE, unit_context
    host = validate_inventory({"s": {"config_root": "/srv/etc"}})[0]
    common = dict(s=host, layout=host.layout, state_dir="/v", venv="/opt/v",
                  secrets_env="/e", wait_ready="/w",
                  **unit_context(host, host.models[0], "127.0.0.1", Fleet([host])))
    gate = host.layout.host_program("sparkstack-routes")
    gated = template(UNIT_TEMPLATE, **common)
    assert f"ExecStartPost=-+{gate} --config-root /srv/etc --undrain qwen3-4b --apply" in gated
    assert f"ExecStop=-+{gate} --config-root /srv/etc --drain qwen3-4b --apply" in gated
    plain = template(UNIT_TEMPLATE, **{**common, "gate": ""})
    assert gate not in plain and "ExecStop=" not in plain


def test_a_deploy_leaves_routes_alone_when_one_member_of_each_swap_group_is_routed():
    from sparkstack.services.litellm import routes_complete
    models = [{"name": "day", "model": "a/b", "port": 8000, "swap_group": "g"},
              {"name": "night", "model": "a/c", "port": 8001, "swap_group": "g"},
              {"name": "solo", "model": "a/d", "port": 8002}]
    fleet = Fleet(validate_inventory({"s": {"models": models, "litellm_model_aliases": {},
                                            "profiles": {"fast": {"local": ["g"]},
                                                         "solo": {"local": ["solo"]}}}}))
    plan = routes_plan(fleet["s"], fleet)
    assert plan.backends["s:8000"].swap_group == "g" and not plan.backends["s:8002"].swap_group
    text = lambda ready: render_config(assemble_config(plan, ready))
    assert routes_complete(plan, text({"s:8000", "s:8002"}))      # night stands by
    assert routes_complete(plan, text({"s:8001", "s:8002"}))      # day stands by
    assert not routes_complete(plan, text({"s:8000"}))            # solo is missing
    assert not routes_complete(plan, text({"s:8002"}))            # no member of g
    assert not routes_complete(plan, None)                         # no config yet
    stale = text({"s:8000", "s:8002"}).replace('"simple-shuffle"', '"least-busy"')
    assert not routes_complete(plan, stale)                        # an older plan's config


def test_litellm_restarts_for_its_settings_and_reloads_for_its_routes():
    from sparkstack.services.litellm import settings_changed
    fleet = Fleet(validate_inventory(TWO_SPARKS))
    before = routes_plan(fleet["a"], fleet).to_json()
    more_routes = Fleet(validate_inventory({**TWO_SPARKS, "c": {
        "address": "10.0.0.3", "roles": ["vllm"], "models": [
            {"name": "qwen3-4b", "model": "Qwen/Qwen3-4B-Instruct-2507", "port": 8000}]}}))
    assert not settings_changed(before, routes_plan(more_routes["a"], more_routes))
    retries = Fleet(validate_inventory({**TWO_SPARKS, "a": {**TWO_SPARKS["a"],
                                                            "litellm_num_retries": 3}}))
    assert settings_changed(before, routes_plan(retries["a"], retries))
    assert not settings_changed(None, routes_plan(retries["a"], retries))


class SlowMetrics:
    """An engine's /metrics: each request takes the next of `delays` seconds to answer
    (the real CPU engine held it for a whole generation) and reports the next of
    `running` requests, then none."""

    def __init__(self, delays: list[float], running: list[int]):
        import threading
        import time
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        delay, answers = iter(delays), iter(running)

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                time.sleep(next(delay, 0))
                body = (f'vllm:num_requests_running{{model_name="m"}} {next(answers, 0)}\n'
                        'vllm:num_requests_waiting{model_name="m"} 0\n').encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def test_a_drain_waits_for_an_engine_too_busy_to_answer_its_metrics_in_time():
    # answers: too late (a busy engine, not an idle one), 1 running, 1 running, idle
    engine = SlowMetrics(delays=[0.5, 0, 0, 0], running=[1, 1, 1, 0])
    lines = []
    backend = Backend(url=engine.url, served_name="m", max_model_len=1, local=True)
    routes.wait_idle(backend, timeout=20, log=lines.append, probe_timeout=0.2)
    engine.server.shutdown()
    assert lines[0] == "routes: m is drained; waiting for its 1 request(s) under way"
    assert lines[-1].startswith("routes: m finished its requests after")


def test_a_drain_of_an_engine_that_no_longer_listens_returns_at_once():
    lines = []
    backend = Backend(url="http://127.0.0.1:1", served_name="m", max_model_len=1, local=True)
    routes.wait_idle(backend, timeout=20, log=lines.append)
    assert lines == []
