"""Task-aware routing: an auto profile picks, for each request, the profile that serves it.

LiteLLM loads `router` from its config (`litellm_settings.callbacks`), before the model
guard. Its pre-call hook, which LiteLLM runs for /v1/chat/completions and /v1/messages
alike, replaces an auto profile's name (or an alias routed to it) in the request with
the profile it picks, cheapest layer first:

1. rules the owner wrote and can predict: a hint in the last user message
   (`#expert`), then the rules in their order (tools offered, the prompt's length in
   estimated tokens, keywords, a pattern); the first that matches wins;
2. the classifier, when there is one: a small model on a local vLLM unit asked for one
   of a fixed set of labels (structured outputs: its answer is always a label), within
   a time budget;
3. the default profile, when no rule matched and the classifier is off, slow, down or
   unsure (its answer's probability below `min_confidence`).

A routing problem never fails a request: whatever goes wrong picks the default. The
decision goes back in the response headers (AUTO_PROFILE_HEADER, AUTO_REASON_HEADER)
and to the request log (`decision_of`). The routes come from the file the deploy writes
(SPARKSTACK_AUTO_ROUTES, format in contract.py).
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import re
import time
from collections import OrderedDict
from dataclasses import dataclass, replace
from fnmatch import fnmatchcase
from pathlib import Path

from .contract import AUTO_PROFILE_HEADER, AUTO_REASON_HEADER, read_auto_routes

log = logging.getLogger("sparkstack.auto_route")
CHARS_PER_TOKEN = 4          # the prompt's length is estimated, not tokenized
CLASSIFIER_CHARS = 2000      # what the classifier reads of the last user message
KEPT_DECISIONS = 10000       # decisions kept for the headers and the request log


@dataclass(frozen=True)
class Decision:
    profile: str
    layer: str                       # hint, rule, classifier or default
    reason: str                      # bounded text: no numbers that vary per request
    classifier_ms: float | None = None
    asked: str = ""                  # the model name the client asked for

    @property
    def why(self) -> str:
        took = f" ({self.classifier_ms:.0f} ms)" if self.classifier_ms is not None else ""
        return f"{self.layer}: {self.reason}{took}"


@dataclass(frozen=True)
class Request:
    """What the rules read of a request, in either API format."""
    last_user: str      # the text of the last user message
    chars: int          # every text of the request (system, messages)
    tools: bool         # the request offers tools

    @property
    def tokens(self) -> int:
        return self.chars // CHARS_PER_TOKEN


def _text(content) -> str:
    """Text of a message's content: a string, or the text parts of a list (OpenAI
    parts, Anthropic blocks; a tool result's own text included)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = (_text(part.get("text") if part.get("type") == "text"
                       else part.get("content", ""))
                 for part in content if isinstance(part, dict))
        return "\n".join(p for p in parts if p)
    return ""


def read_request(data: dict) -> Request:
    messages = [m for m in data.get("messages") or [] if isinstance(m, dict)]
    texts = [_text(m.get("content")) for m in messages] + [_text(data.get("system"))]
    last_user = next((_text(m.get("content")) for m in reversed(messages)
                      if m.get("role") == "user"), "")
    return Request(last_user=last_user, chars=sum(len(t) for t in texts),
                   tools=bool(data.get("tools") or data.get("functions")))


HINT = re.compile(r"(?<![\w#])#([A-Za-z0-9][A-Za-z0-9._-]*)")


def hint(route: dict, request: Request) -> Decision | None:
    """`#profile` in the last user message (one pass, however long the message)."""
    if "#" not in request.last_user or not route.get("hints"):
        return None
    named = {m.rstrip("._-").lower() for m in HINT.findall(request.last_user)}
    for profile in route["hints"]:  # in their order, when several are named
        if profile.lower() in named:
            return Decision(profile, "hint", f"#{profile}")
    return None


def rule_matches(rule: dict, request: Request) -> str | None:
    """Why `rule` matches `request` (all its conditions hold), or None."""
    why = []
    if "tools" in rule:
        if rule["tools"] != request.tools:
            return None
        why.append("tools offered" if rule["tools"] else "no tools")
    if "min_prompt_tokens" in rule:
        if request.tokens < rule["min_prompt_tokens"]:
            return None
        why.append(f"prompt >= {rule['min_prompt_tokens']} tokens")
    if "max_prompt_tokens" in rule:
        if request.tokens > rule["max_prompt_tokens"]:
            return None
        why.append(f"prompt <= {rule['max_prompt_tokens']} tokens")
    if "keywords" in rule:
        text = request.last_user.lower()
        found = next((k for k in rule["keywords"] if k.lower() in text), None)
        if found is None:
            return None
        why.append(f"keyword {found!r}")
    if "pattern" in rule:
        if not re.search(rule["pattern"], request.last_user):
            return None
        why.append(f"pattern {rule['pattern']!r}")
    return ", ".join(why) or None


def by_rules(route: dict, request: Request) -> Decision | None:
    """Layer 1: a hint, else the first rule that matches."""
    if found := hint(route, request):
        return found
    for rule in route.get("rules", []):
        if (why := rule_matches(rule, request)) is not None:
            return Decision(rule["profile"], "rule", why)
    return None


def classifier_request(classifier: dict, request: Request) -> dict:
    labels = classifier["labels"]
    lines = "\n".join(f"- {label}: {what}" for label, what in labels.items())
    return {
        "model": classifier["model"],
        "messages": [
            {"role": "system",
             "content": "Pick the one label that fits the user's request best. Answer "
                        f"with the label only.\nLabels:\n{lines}"},
            {"role": "user", "content": request.last_user[:CLASSIFIER_CHARS] or "(empty)"}],
        "max_tokens": 16, "temperature": 0,
        # vLLM holds the answer to one of the labels, whatever the model
        "structured_outputs": {"choice": list(labels)},
        # the answer's probability, only when it decides (the CPU engine compiles
        # its logprobs with a C++ compiler, which a host may lack)
        **({"logprobs": True} if classifier.get("min_confidence", 0) > 0 else {}),
    }


def confidence(choice: dict) -> float:
    """The answer's probability: the product of its tokens' probabilities."""
    tokens = ((choice.get("logprobs") or {}).get("content")) or []
    return math.exp(sum(t.get("logprob", 0.0) for t in tokens)) if tokens else 1.0


async def by_classifier(route: dict, request: Request, client,
                        api_key: str | None = None) -> Decision:
    """Layer 2, else the default (layer 3) with the reason. `api_key`: vLLM's, by
    default from the environment (LiteLLM's unit has it)."""
    classifier, default = route["classifier"], route["default"]
    budget = classifier["budget_ms"] / 1000
    start = time.monotonic()
    ms = lambda: round((time.monotonic() - start) * 1000, 1)  # noqa: E731
    key = api_key or os.environ.get("VLLM_API_KEY")
    try:
        reply = await asyncio.wait_for(client.post(
            classifier["url"], json=classifier_request(classifier, request),
            headers={"Authorization": f"Bearer {key}"} if key else {},
            timeout=budget), budget)
        reply.raise_for_status()
        choice = reply.json()["choices"][0]
        label = (choice["message"]["content"] or "").strip()
    except (asyncio.TimeoutError, TimeoutError):
        return Decision(default, "default", "classifier slow", ms())
    except Exception as e:  # down, refused, an error answer: never the client's problem
        if "timeout" in type(e).__name__.lower():
            return Decision(default, "default", "classifier slow", ms())
        return Decision(default, "default", "classifier down", ms())
    if label not in classifier["labels"]:
        return Decision(default, "default", "classifier answered no label", ms())
    if confidence(choice) < classifier.get("min_confidence", 0.0):
        return Decision(default, "default", "classifier unsure", ms())
    return Decision(label, "classifier", label, ms())


async def decide(route: dict, data: dict, client=None) -> Decision:
    """The profile for one request; never raises."""
    try:
        request = read_request(data)
        if found := by_rules(route, request):
            return found
        if route.get("classifier") and client is not None:
            return await by_classifier(route, request, client)
        return Decision(route["default"], "default", "no rule matched")
    except Exception:
        log.exception("auto route: deciding failed; the default profile serves")
        return Decision(route["default"], "default", "routing failed")


def route_for(profiles: dict[str, dict], model: str) -> dict | None:
    """The auto profile a requested model name stands for (its name or an alias)."""
    for route in profiles.values():
        if any(model == n or ("*" in n and fnmatchcase(model, n)) for n in route["names"]):
            return route
    return None


_decisions: OrderedDict[str, Decision] = OrderedDict()


def remember(call_id: str, decision: Decision) -> None:
    _decisions[call_id] = decision
    while len(_decisions) > KEPT_DECISIONS:
        _decisions.popitem(last=False)


def decision_of(call_id: str | None) -> Decision | None:
    """The decision made for a request (for the request log), if it was an auto one."""
    return _decisions.get(call_id or "")


def load_routes(path: str | None = None) -> dict[str, dict]:
    path = path or os.environ.get("SPARKSTACK_AUTO_ROUTES", "")
    if not path or not Path(path).is_file():
        return {}
    return read_auto_routes(Path(path).read_text())


def _make_router():
    import httpx
    from litellm.integrations.custom_logger import CustomLogger

    class AutoRouter(CustomLogger):
        def __init__(self) -> None:
            super().__init__()
            self.profiles = load_routes()
            self.client: httpx.AsyncClient | None = None

        async def async_pre_call_hook(self, user_api_key_dict, cache, data, call_type):
            route = route_for(self.profiles, str((data or {}).get("model") or ""))
            if route is None:
                return data
            if self.client is None and any(r.get("classifier")
                                           for r in self.profiles.values()):
                self.client = httpx.AsyncClient(trust_env=False)  # a local model
            asked = str(data["model"])
            decision = replace(await decide(route, data, self.client), asked=asked)
            data["model"] = decision.profile
            remember(str(data.get("litellm_call_id") or ""), decision)
            return data

        async def async_post_call_response_headers_hook(self, data, user_api_key_dict,
                                                        response, request_headers=None,
                                                        litellm_call_info=None):
            decision = decision_of(str((data or {}).get("litellm_call_id") or ""))
            if decision is None:
                return None
            # header values are latin-1: a keyword in another script is escaped
            why = decision.why.encode("ascii", "backslashreplace").decode()
            return {AUTO_PROFILE_HEADER: decision.profile, AUTO_REASON_HEADER: why}

    return AutoRouter()


try:
    router = _make_router()
except ImportError:  # imported without LiteLLM (the host venv, tests): the logic only
    router = None
