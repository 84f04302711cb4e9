"""Task-aware routing: the rules and the classifier layer (against a small HTTP server
answering as vLLM does), what the deploy renders for the router, and the settings it
refuses."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from sparkstack_host import auto_route
from sparkstack_host.auto_route import Decision, decide, read_request, route_for

from sparkstack.fleet import Fleet
from sparkstack.services.litellm import AUTO_ROUTER, auto_routes, routes_plan
from sparkstack.settings import SettingsError, validate_inventory

ROUTE = {"names": ["auto", "smart-*"], "default": "fast",
         "hints": ["fast", "expert", "code"],
         "rules": [{"profile": "code", "tools": True},
                   {"profile": "expert", "min_prompt_tokens": 100},
                   {"profile": "code", "keywords": ["Traceback", "stack trace"]},
                   {"profile": "expert", "pattern": r"(?i)\bresearch\b"}],
         "classifier": None}


def user(text: str, **extra) -> dict:
    return {"model": "auto", "messages": [{"role": "user", "content": text}], **extra}


def run(route: dict, data: dict, client=None) -> Decision:
    return asyncio.run(decide(route, data, client))


@pytest.mark.parametrize("data, profile, why", [
    (user("hi", tools=[{"type": "function", "function": {"name": "f"}}]), "code",
     "rule: tools offered"),
    (user("x" * 400), "expert", "rule: prompt >= 100 tokens"),
    (user("what is this stack trace?"), "code", "rule: keyword 'stack trace'"),
    (user("Research the history of tea"), "expert", r"rule: pattern '(?i)\\bresearch\\b'"),
    (user("hello there"), "fast", "default: no rule matched"),
    (user("please think hard #expert"), "expert", "hint: #expert"),
    (user("#code: #expert"), "expert", "hint: #expert"),  # in the order of the hints
    (user("see issue#code"), "fast", "default: no rule matched"),  # not a hint
    (user("Think it through, #Expert."), "expert", "hint: #expert"),
])
def test_rules_decide_deterministically(data, profile, why):
    d = run(ROUTE, data)
    assert (d.profile, d.why) == (profile, why)


def test_both_api_formats_are_read_alike():
    anthropic_style = {"model": "auto", "system": "s" * 300, "max_tokens": 5,
                       "tools": [{"name": "f", "input_schema": {}}],
                       "messages": [{"role": "user", "content": [
                           {"type": "text", "text": "look at this"},
                           {"type": "tool_result", "tool_use_id": "1",
                            "content": [{"type": "text", "text": "Traceback ..."}]}]}]}
    r = read_request(anthropic_style)
    assert r.tools and "Traceback" in r.last_user and r.chars > 300
    openai_style = user([{"type": "text", "text": "hi"}, {"type": "image_url"}])
    assert read_request(openai_style).last_user == "hi"


def test_an_alias_pattern_stands_for_its_auto_profile():
    profiles = {"auto": ROUTE}
    assert route_for(profiles, "auto") is ROUTE and route_for(profiles, "smart-x") is ROUTE
    assert route_for(profiles, "fast") is None


class Classifier:
    """Answers like vLLM's chat completions: `label` after `delay` s, `status`."""

    def __init__(self, label="code", delay=0.0, status=200, logprob=-0.1):
        self.seen: list[dict] = []
        self.keys: list[str | None] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                outer.seen.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                outer.keys.append(self.headers.get("Authorization"))
                time.sleep(delay)
                body = json.dumps({"choices": [{"message": {"content": label}, "logprobs": {
                    "content": [{"token": label, "logprob": logprob}]}}]}).encode()
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1/chat/completions"

    def route(self, **extra) -> dict:
        return {**ROUTE, "classifier": {"url": self.url, "model": "router", "budget_ms": 300,
                                        "min_confidence": 0.5, "labels": {
                                            "code": "code", "expert": "research",
                                            "fast": "chat"}, **extra}}


def classify(route: dict, text: str = "hello there") -> Decision:
    async def go():
        async with httpx.AsyncClient() as client:
            return await decide(route, user(text), client)
    return asyncio.run(go())


def test_the_classifier_is_asked_for_one_of_the_labels_when_no_rule_matches():
    c = Classifier("expert")
    d = classify(c.route())
    assert (d.profile, d.layer, d.reason) == ("expert", "classifier", "expert")
    assert d.classifier_ms is not None and d.classifier_ms < 300
    asked = c.seen[0]
    assert asked["structured_outputs"] == {"choice": ["code", "expert", "fast"]}
    assert asked["model"] == "router" and asked["messages"][-1]["content"] == "hello there"
    assert asked["logprobs"] is True  # min_confidence 0.5 needs the answer's probability
    classify(c.route(min_confidence=0))
    assert "logprobs" not in c.seen[-1]  # not asked for when nothing uses it
    # a rule that matches never asks it
    assert classify(c.route(), "a stack trace").layer == "rule" and len(c.seen) == 2


@pytest.mark.parametrize("classifier, reason", [
    (dict(delay=0.6), "classifier slow"),
    (dict(status=500), "classifier down"),
    (dict(label="poetry"), "classifier answered no label"),
    (dict(logprob=-2.0), "classifier unsure"),   # p = 0.14 < 0.5
])
def test_a_slow_down_or_unsure_classifier_leaves_the_default(classifier, reason):
    start = time.monotonic()
    d = classify(Classifier(**classifier).route())
    assert (d.profile, d.layer, d.reason) == ("fast", "default", reason)
    assert time.monotonic() - start < 0.55  # never past its budget (300 ms)


def test_a_classifier_nobody_answers_leaves_the_default():
    d = classify({**ROUTE, "classifier": {"url": "http://127.0.0.1:9/v1/chat/completions",
                                          "model": "r", "budget_ms": 300, "labels": {"code": "c"}}})
    assert (d.profile, d.reason) == ("fast", "classifier down")


def test_a_request_the_rules_cannot_read_still_gets_the_default():
    d = run(ROUTE, {"model": "auto", "messages": "not a list"})
    assert d.profile == "fast" and d.layer == "default"


# --- what the deploy renders, and refuses ----------------------------------------------

AUTO = {"title": "Auto", "routes": {"default": "fast", "rules": [
    {"profile": "code", "tools": True}],
    "classifier": {"model": "qwen3-4b", "labels": {"code": "code", "fast": "chat"}}}}


def host(tmp_path, **settings):
    return validate_inventory({"spark1": {"secrets_dir": str(tmp_path), "cloud_api_key": "",
                                          **settings}})


def profiles_with(**extra) -> dict:
    from sparkstack.settings import load_defaults
    return {**load_defaults()["profiles"], **extra}


def test_the_router_gets_its_routes_and_the_auto_profile_is_served_as_its_default(tmp_path):
    hosts = host(tmp_path, profiles=profiles_with(auto=AUTO),
                 litellm_model_aliases={"claude-*": "code", "smart": "auto"})
    s, fleet = hosts[0], Fleet(hosts)
    rendered = auto_routes(s, fleet)["auto"]
    assert rendered["names"] == ["auto", "smart"]
    assert rendered["hints"] == ["fast", "expert", "code", "cloud"]
    assert rendered["classifier"]["url"] == "http://127.0.0.1:8000/v1/chat/completions"
    config = routes_plan(s, fleet).config
    assert config["litellm_settings"]["callbacks"][0] == AUTO_ROUTER
    served = {e["model_name"]: e["model_info"].get("sparkstack_backend")
              for e in config["model_list"] if e["model_info"].get("sparkstack_route") == "local"}
    assert served["auto"] == served["fast"] == served["smart"]


def test_without_an_auto_profile_no_router_is_loaded(tmp_path):
    hosts = host(tmp_path, profiles={k: v for k, v in profiles_with().items() if k != "auto"})
    config = routes_plan(hosts[0], Fleet(hosts)).config
    assert AUTO_ROUTER not in config["litellm_settings"]["callbacks"]
    assert auto_routes(hosts[0], Fleet(hosts)) == {}


@pytest.mark.parametrize("routes, says", [
    ({"default": "nope"}, "profiles.auto.routes.default = 'nope': no such profile"),
    ({"default": "fast", "rules": [{"profile": "auto", "tools": True}]},
     "profiles.auto.routes.rules[0].profile = 'auto': is an auto profile itself, a loop"),
    ({"default": "fast", "classifier": {"model": "tiny", "labels": {"code": "c"}}},
     "profiles.auto.routes.classifier.model = 'tiny': not a model this host serves"),
    ({"default": "fast", "classifier": {"model": "qwen3-4b", "labels": {}}},
     "auto.routes.classifier.labels: must map one or more profiles"),
    ({"default": "fast", "rules": [{"profile": "code"}]},
     "auto.routes.rules[0]: names no condition"),
    ({"default": "fast", "rules": [{"profile": "code", "pattern": "("}]},
     "auto.routes.rules[0].pattern: not a regular expression"),
    ({"default": "fast", "classifier": {"model": "qwen3-4b", "labels": {"nope": "x"}}},
     "profiles.auto.routes.classifier.labels.nope = 'nope': no such profile"),
])
def test_bad_routes_are_refused_naming_the_setting(tmp_path, routes, says):
    with pytest.raises(SettingsError) as err:
        host(tmp_path, profiles=profiles_with(auto={"routes": routes}))
    assert says in str(err.value)


def test_an_auto_profile_has_no_models_of_its_own(tmp_path):
    with pytest.raises(SettingsError) as err:
        host(tmp_path, profiles=profiles_with(auto={"local": ["qwen3-4b"],
                                                    "routes": {"default": "fast"}}))
    assert "an auto profile (routes) picks other profiles" in str(err.value)


def test_health_asks_the_classifier_and_says_when_it_is_too_slow():
    from sparkstack_host import health
    classifier = Classifier("code")
    ok, detail, _ = health.check_classifier("auto", classifier.route(), "k")
    assert ok and detail.startswith("router answered 'code' in ") and "budget 300 ms" in detail
    assert classifier.keys == ["Bearer k"]  # vLLM's key, read from its root-only file
    ok, detail, advice = health.check_classifier("auto", Classifier(delay=0.5).route(), "k")
    assert not ok and "router: classifier slow" in detail and "to fast" in detail
    assert "budget_ms" in advice
