"""The request log, the usage report and Claude Code, end to end on a simulated Spark.

spark7 runs PostgreSQL, LiteLLM and vLLM (`fast` on qwen3-4b, `code` on
qwen3-coder-30b with claude-* routed to it, `cloud` on the cloud stand-in). A known mix
of requests goes through LiteLLM with real clients; the report must count exactly what
was sent. Then the HTML report is opened in headless Chromium, PostgreSQL is stopped
under traffic, and the real Claude Code CLI works against the Spark: a plain answer, a
tool call that really writes a file, streaming, and token counting.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import time
from pathlib import Path

import anthropic
import httpx
import openai
import pytest

from sparkstack.simulated.fleet import ssh
from tests.e2e.conftest import SPARKSTACK, SimFleet
from tests.e2e.helpers import REPO

pytestmark = pytest.mark.e2e
ARTIFACTS = REPO / ".sim" / "artifacts"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


class Spark(SimFleet):
    def __init__(self, tmp, cloud):
        super().__init__(tmp, cloud)
        self.host = self.boot("spark7", 7)
        self.write_hosts({}, {"spark7": {"roles": ["postgres", "vllm", "litellm"],
                                         "litellm_bind_address": self.host.address}})
        self.base = f"http://{self.host.address}:4000"

    @property
    def key(self) -> str:
        return self.master_key("spark7")

    def usage(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([SPARKSTACK, "usage", "-i", str(self.inventory), *args],
                              cwd=REPO, capture_output=True, text=True, timeout=120)

    def sql(self, query: str) -> str:
        return self.psql(self.host, query)


@pytest.fixture(scope="module")
def spark(sim):
    return sim(Spark).deployed()


def wait_for_rows(spark: Spark, count: int, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if int(spark.sql("SELECT count(*) FROM sparkstack_requests WHERE final") or 0) >= count:
            return
        time.sleep(0.5)
    raise AssertionError(f"fewer than {count} final rows after {timeout} s")


def test_a_known_mix_of_requests_is_reported_exactly(spark):
    oa = openai.OpenAI(base_url=f"{spark.base}/v1", api_key=spark.key, max_retries=0)
    an = anthropic.Anthropic(base_url=spark.base, api_key=spark.key, max_retries=0)
    hi = [{"role": "user", "content": "hi"}]
    for _ in range(6):
        assert oa.chat.completions.create(model="fast", messages=hi).choices[0].message.content
    for _ in range(4):
        assert an.messages.create(model="claude-sonnet-4-5", max_tokens=16, messages=hi)
    for _ in range(3):
        chunks = oa.chat.completions.create(model="fast", messages=hi, stream=True)
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    for _ in range(5):
        assert oa.chat.completions.create(model="cloud", messages=hi)
    # fast's model stops: the readiness gate sends `fast` to its cloud model meanwhile
    ssh(spark.host, "systemctl stop sparkstack-vllm-qwen3-4b.service")
    try:
        for _ in range(4):
            reply = oa.chat.completions.create(model="fast", messages=hi)
            assert reply.choices[0].message.content.startswith("cloud-standin:")
    finally:
        ssh(spark.host, "systemctl start sparkstack-vllm-qwen3-4b.service")
    for _ in range(2):
        with pytest.raises(openai.BadRequestError):
            oa.chat.completions.create(model="no-such-profile", messages=hi)
    wait_for_rows(spark, 24)

    report = json.loads(spark.usage("--since", "1h", "--json").stdout)
    rows = {r["group"]: r for r in report["rows"]}
    got = {g: (r["requests"], r["local"], r["fallback"], r["cloud"], r["errors"])
           for g, r in rows.items()}
    assert got == {"fast": (13, 9, 4, 0, 0), "claude-sonnet-4-5": (4, 4, 0, 0, 0),
                   "cloud": (5, 0, 0, 5, 0), "no-such-profile": (2, 0, 0, 0, 2),
                   "fleet": (24, 13, 4, 5, 2)}
    assert report["headline"] == "local answered 54.2% of 24 requests; fallback cost $0.00"
    assert rows["fleet"]["p50_ms"] is not None and rows["fleet"]["p95_ms"] >= rows[
        "fleet"]["p50_ms"]
    by_host = {r["group"]: r["requests"] for r in json.loads(
        spark.usage("--since", "1h", "--by", "host", "--json").stdout)["rows"]}
    assert by_host == {"spark7": 13, "cloud": 9, "none": 2, "fleet": 24}
    by_key = {r["group"] for r in json.loads(
        spark.usage("--since", "1h", "--by", "key", "--json").stdout)["rows"]}
    assert "master key" in by_key and not any(g.startswith("litellm_prox") for g in by_key)
    # A week reads the rollups the writer kept beside the rows: the same counts, tokens,
    # cost and latency percentiles as the rows of the last hour, for every grouping.
    for by in ("profile", "host", "key", "day"):
        hour, week = (json.loads(spark.usage("--since", since, "--by", by, "--json").stdout)
                      for since in ("1h", "7d"))
        assert week["step"] == "hour" and hour["step"] == "minute"
        assert week["rows"] == hour["rows"], by
        assert sum(p["n"] for p in week["series"]) == 24
    # streams have their time to first token; no key and no text is stored
    assert spark.sql("SELECT count(*) FROM sparkstack_requests WHERE final AND stream "
                     "AND ttft_ms IS NOT NULL") == "3"
    assert spark.sql("SELECT count(*) FROM sparkstack_requests WHERE prompt IS NOT NULL "
                     "OR answer IS NOT NULL") == "0"
    dump = ssh(spark.host, "cd / && runuser -u postgres -- pg_dump litellm").stdout
    assert spark.key not in dump and spark.key[3:] not in dump
    table = spark.usage("--since", "1h").stdout
    assert "local answered 54.2% of 24 requests; fallback cost $0.00" in table


def test_the_html_report_renders_its_charts_in_chromium(spark):
    from playwright.sync_api import sync_playwright
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page_file = ARTIFACTS / "usage.html"
    assert spark.usage("--since", "1h", "--html", str(page_file)).returncode == 0
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        page = browser.new_page(viewport={"width": 960, "height": 900})
        page.goto(page_file.as_uri())
        assert "local answered 54.2% of 24 requests" in page.inner_text("#headline")
        bars = page.locator("#requests-over-time rect.bar")
        assert bars.count() >= 3  # local, fallback, cloud at least
        assert page.locator("#requests-over-time rect.bar.fallback").count() >= 1
        box = page.locator("#latency-percentiles rect.bar").first.bounding_box()
        assert box and box["width"] > 0 and box["height"] > 0
        page.screenshot(path=str(ARTIFACTS / "usage.png"), full_page=True)
        browser.close()
    assert (ARTIFACTS / "usage.png").stat().st_size > 10_000


def test_rows_wait_on_disk_while_postgres_restarts_and_none_is_lost(spark):
    """PostgreSQL stopped under traffic: every request is answered, and every row is
    written once it is back (kept on LiteLLM's disk meanwhile), in the report too."""
    before = int(spark.sql("SELECT count(*) FROM sparkstack_requests WHERE final"))
    ssh(spark.host, "systemctl stop postgresql")
    try:
        with spark.traffic(spark.host, ["fast"], rate=4) as traffic:
            time.sleep(8)
        journal = ssh(spark.host, "journalctl -u 'sparkstack-litellm@*' --no-pager "
                                  "-o cat | grep 'request log:' | tail -3").stdout
        assert "kept on disk until it answers" in journal and "lost" not in journal, journal
    finally:
        ssh(spark.host, "systemctl start postgresql")
    assert traffic.failures() == [] and len(traffic.answers) >= 20
    wait_for_rows(spark, before + len(traffic.answers), timeout=30)
    assert int(spark.sql("SELECT count(*) FROM sparkstack_requests WHERE final")) == \
        before + len(traffic.answers)
    journal = ssh(spark.host, "journalctl -u 'sparkstack-litellm@*' --no-pager -o cat "
                              "| grep 'request log:' | tail -1").stdout
    assert "kept while PostgreSQL was away are written" in journal


def claude_env(spark: Spark) -> dict[str, str]:
    out = subprocess.run([SPARKSTACK, "claude-env", "-i", str(spark.inventory)], cwd=REPO,
                         capture_output=True, text=True, check=True).stdout
    env = {k: v for k, v in os.environ.items() if k != "ANTHROPIC_API_KEY"}
    for line in out.splitlines():
        if line.startswith("export "):
            key, _, value = line[len("export "):].partition("=")
            env[key] = shlex.split(value)[0]
    assert "unset ANTHROPIC_API_KEY" in out
    return env


def claude(spark: Spark, cwd: Path, prompt: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["claude", "-p", prompt, "--model", "claude-sonnet-4-5", *args],
                          cwd=cwd, env={**claude_env(spark), "HOME": str(cwd)},
                          capture_output=True, text=True, timeout=300)


def test_claude_code_answers_from_the_local_code_model(spark, tmp_path):
    env = claude_env(spark)
    assert env["ANTHROPIC_BASE_URL"] == spark.base
    assert env["ANTHROPIC_AUTH_TOKEN"] == spark.key
    assert (env["ANTHROPIC_MODEL"], env["ANTHROPIC_DEFAULT_HAIKU_MODEL"]) == ("code", "fast")
    result = claude(spark, tmp_path, "What is 2 + 2?")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "standin:qwen3-coder-30b@spark7" in result.stdout


def test_claude_code_calls_a_tool_that_really_runs(spark, tmp_path):
    target = tmp_path / "hello.txt"
    result = claude(spark, tmp_path,
                    f"Create the file {target} containing exactly: sparkstack says hi",
                    "--allowedTools", "Write")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert target.read_text() == "sparkstack says hi"


def test_claude_code_streams_and_its_requests_are_logged_under_their_alias(spark, tmp_path):
    result = claude(spark, tmp_path, "Say hi", "--output-format", "stream-json", "--verbose")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    events = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    assert any(e.get("type") == "assistant" for e in events)
    assert events[-1].get("type") == "result" and not events[-1].get("is_error")
    time.sleep(2)
    streamed = spark.sql("SELECT count(*) FROM sparkstack_requests WHERE final AND stream "
                         "AND requested = 'claude-sonnet-4-5' AND route = 'local'")
    assert int(streamed) >= 1


def test_count_tokens_answers(spark):
    reply = httpx.post(f"{spark.base}/v1/messages/count_tokens", timeout=30,
                       headers={"x-api-key": spark.key, "anthropic-version": "2023-06-01"},
                       json={"model": "claude-sonnet-4-5",
                             "messages": [{"role": "user", "content": "hello there"}]})
    assert reply.status_code == 200, reply.text
    assert reply.json()["input_tokens"] > 0


# --- the default auto profile: rules in both formats, Claude Code, the route report ---

TOOL = {"type": "function", "function": {"name": "lookup", "description": "look up a word",
                                         "parameters": {"type": "object", "properties": {
                                             "word": {"type": "string"}}}}}
FAST, CODE, EXPERT = ("standin:qwen3-4b@spark7", "standin:qwen3-coder-30b@spark7",
                      "standin:qwen3-coder-30b@spark7")
LONG_DOCUMENT = "The quarterly figures were stable across regions. " * 600  # ~7,500 tokens


@pytest.mark.parametrize("ask, profile, why", [
    ({"tools": [TOOL]}, "code", "rule: tools offered"),
    ({"text": LONG_DOCUMENT + "\nSummarise this."}, "expert", "rule: prompt >= 6000 tokens"),
    ({"text": "hi #expert"}, "expert", "hint: #expert"),
    ({"text": "Why does my python script crash?"}, "code", "rule: pattern"),
    ({"text": "hi"}, "fast", "default: no rule matched"),
])
def test_auto_routes_by_its_rules_in_both_formats_and_says_why(spark, ask, profile, why):
    oa = openai.OpenAI(base_url=f"{spark.base}/v1", api_key=spark.key, max_retries=0)
    an = anthropic.Anthropic(base_url=spark.base, api_key=spark.key, max_retries=0)
    text = ask.get("text", "look up 'spark'")
    raw = oa.chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "user", "content": text}], max_tokens=16,
        **({"tools": ask["tools"]} if "tools" in ask else {}))
    assert raw.headers["x-sparkstack-profile"] == profile
    assert raw.headers["x-sparkstack-route"].startswith(why)
    reply = raw.parse()
    assert reply.choices[0].message.content or reply.choices[0].message.tool_calls
    tools = [{"name": "lookup", "description": "look up a word",
              "input_schema": TOOL["function"]["parameters"]}] if "tools" in ask else []
    raw = an.messages.with_raw_response.create(
        model="auto", max_tokens=16, messages=[{"role": "user", "content": text}],
        **({"tools": tools} if tools else {}))
    assert raw.headers["x-sparkstack-profile"] == profile
    assert raw.headers["x-sparkstack-route"].startswith(why)
    assert raw.parse().content
    # a stream says it in its headers too, before its first token
    with oa.chat.completions.with_streaming_response.create(
            model="auto", messages=[{"role": "user", "content": text}], max_tokens=16,
            stream=True, **({"tools": ask["tools"]} if "tools" in ask else {})) as stream:
        assert stream.headers["x-sparkstack-profile"] == profile
        assert any(line for line in stream.iter_lines())


def test_the_answer_comes_from_the_picked_profiles_model(spark):
    oa = openai.OpenAI(base_url=f"{spark.base}/v1", api_key=spark.key, max_retries=0)
    for text, served in (("hi", FAST), ("fix this python bug", CODE), ("#fast hello", FAST)):
        reply = oa.chat.completions.create(model="auto", max_tokens=16,
                                           messages=[{"role": "user", "content": text}])
        assert reply.choices[0].message.content.startswith(served), (text, reply)


def test_claude_code_on_auto_is_routed_by_its_tools_to_code(spark, tmp_path):
    routed = ("SELECT count(*) FROM sparkstack_requests WHERE final AND requested = 'auto' "
              "AND auto_profile = 'code' AND auto_reason = 'rule: tools offered'")
    before = int(spark.sql(routed))
    result = subprocess.run(["claude", "-p", "What is 2 + 2?", "--model", "auto"], cwd=tmp_path,
                            env={**claude_env(spark), "HOME": str(tmp_path)},
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert CODE in result.stdout
    time.sleep(2)
    assert int(spark.sql(routed)) > before


def test_usage_by_route_reports_what_auto_picked_and_why(spark):
    time.sleep(2)
    report = json.loads(spark.usage("--since", "1h", "--by", "route", "--json").stdout)
    rows = {r["group"]: r["requests"] for r in report["rows"]}
    assert rows["auto -> expert (hint: #expert)"] == 3
    assert rows["auto -> code (rule: tools offered)"] >= 3
    assert rows["auto -> fast (default: no rule matched)"] == 4
    assert rows["direct"] > 20
    hour, week = (json.loads(spark.usage("--since", since, "--by", "route", "--json").stdout)
                  for since in ("1h", "7d"))
    assert week["rows"] == hour["rows"]
