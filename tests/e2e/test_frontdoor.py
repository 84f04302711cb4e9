"""The front door under its own failures: nginx on LiteLLM's port in front of two LiteLLM
processes, on one simulated Spark (the vLLM stand-in behind it), with real SDK clients
(openai and anthropic, plain and streaming, no retries) sending steady traffic while a
process is killed, all of them are, a setting changes, and LiteLLM is upgraded through
`sparkstack update` (a reboot: test_stack's, whose Spark runs the default two)."""

from __future__ import annotations

import json
import time

import openai
import pytest

from sparkstack.settings import load_defaults
from sparkstack.simulated.fleet import ssh
from sparkstack_host.contract import FRONTDOOR_UNIT
from tests.e2e.conftest import SimFleet
from tests.e2e.traffic import Traffic

pytestmark = pytest.mark.e2e
MODELS = [{"name": "qwen3-4b", "model": "Qwen/Qwen3-4B-Instruct-2507", "port": 8000,
           "gpu_memory_utilization": 0.15, "max_model_len": 32768},
          {"name": "qwen3-coder-30b", "model": "Qwen/Qwen3-Coder-30B-A3B-Instruct-FP8",
           "port": 8001, "gpu_memory_utilization": 0.45, "max_model_len": 65536,
           "tool_call_parser": "qwen3_coder"}]


class Spark(SimFleet):
    def __init__(self, tmp, cloud):
        super().__init__(tmp, cloud)
        self.host = self.boot("spark9", 9)
        self.settings: dict = {"litellm_processes": 2}
        self.write()
        self.base = f"http://{self.host.address}:4000"

    def write(self, slow: bool = False, **group) -> None:
        self.settings.update(group)
        host = {"roles": ["postgres", "vllm", "litellm"],
                "litellm_bind_address": self.host.address}
        if slow:  # a third model whose streams take seconds (the stand-in's knob)
            host["models"] = [*MODELS, {
                "name": "slow", "model": "Qwen/Qwen3-4B-Instruct-2507", "port": 8002,
                "gpu_memory_utilization": 0.1, "max_model_len": 4096,
                "environment": {"VLLM_STANDIN_CHUNK_SECONDS": "0.5"}}]
            host["profiles"] = {**load_defaults()["profiles"], "slow": {"local": ["slow"]}}
        self.write_hosts(self.settings, {"spark9": host})

    def sql(self, query: str) -> str:
        return self.psql(self.host, query)

    def main_pid(self, process: int) -> int:
        return int(ssh(self.host, f"systemctl show -p MainPID --value "
                                  f"sparkstack-litellm@{process}").stdout.strip())

    def traffic(self) -> Traffic:
        """Eight clients: openai and anthropic, plain and streaming, on fast and code."""
        return Traffic(self.base, self.master_key("spark9"), ["fast", "code"], rate=8,
                       by_backend=False, streams=True)

    def nginx_errors(self) -> list[str]:
        """The front door's last complaints (nginx logs to its unit's journal)."""
        return ssh(self.host, f"journalctl -u {FRONTDOOR_UNIT} -o cat --no-pager "
                              "-n 40").stdout.splitlines()

    def both_answer(self, timeout: float = 120) -> None:
        """Both processes up and answering on their sockets (health's rows)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            rows = self.health_rows()
            if all(rows.get(f"litellm process {i}", {}).get("ok") for i in (1, 2)):
                return
            time.sleep(1)
        raise AssertionError(f"LiteLLM processes not both answering: {self.health_rows()}")

    def health_rows(self) -> dict:
        out = self.sparkstack("health", "--json", merged=False)
        return {r["check"]: r for r in json.loads(out.stdout or "[]")}


def judge(spark: Spark, traffic: Traffic, normal: float, what: str) -> dict:
    """What clients saw: no request failed that had not begun (a stream already under
    way may be cut), and the longest took at most 1 s more than a normal one."""
    failed = [a for a in traffic.answers if a.error and not (a.stream and a.begun)]
    longest = max(a.seconds for a in traffic.answers)
    figures = {"what": what, "requests": len(traffic.answers), "failed": len(failed),
               "cut streams": sum(1 for a in traffic.answers if a.error and a.stream
                                  and a.begun),
               "longest_s": round(longest, 2), "normal_s": round(normal, 2)}
    print("front door:", json.dumps(figures))
    assert failed == [], (failed[:3], spark.nginx_errors())
    return figures


def normal_time(spark: Spark) -> float:
    """The longest request of 5 s of undisturbed traffic."""
    with spark.traffic() as quiet:
        time.sleep(5)
    assert quiet.failures() == [] and len(quiet.answers) > 20
    return max(a.seconds for a in quiet.answers)


@pytest.fixture(scope="module")
def spark(sim):
    return sim(Spark).deployed()


def test_the_deploy_runs_two_litellm_processes_behind_nginx(spark):
    units = ssh(spark.host, "systemctl is-active sparkstack-frontdoor sparkstack-litellm@1 "
                            "sparkstack-litellm@2 sparkstack-litellm-queue.socket "
                            "nginx; true").stdout.split()
    # the stock nginx unit is masked: installing the package started nothing on :80
    assert units == ["active"] * 4 + ["inactive"]
    rows = spark.health_rows()
    assert rows["litellm process 1"]["ok"] and rows["litellm process 2"]["ok"], rows
    assert rows["unit sparkstack-frontdoor.service"]["ok"]
    listening = ssh(spark.host, "ss -Hltn").stdout
    assert f"{spark.host.address}:4000" in listening and ":80 " not in listening
    # a re-deploy that changes nothing, and a reboot after which both processes serve,
    # are test_stack's (its Spark runs the default two processes)


def test_every_process_answers_and_the_request_log_says_which(spark):
    with spark.traffic() as traffic:
        time.sleep(6)
    assert traffic.failures() == [] and len(traffic.answers) > 30
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        by = dict(line.split("|") for line in spark.sql(
            "SELECT process, count(*) FROM sparkstack_requests WHERE final "
            "GROUP BY 1").splitlines())
        if {"1", "2"} <= set(by):
            break
        time.sleep(1)
    assert {"1", "2"} <= set(by), by
    report = json.loads(spark.sparkstack("usage", "--since", "1h", "--by", "process",
                                         "--json", merged=False).stdout)
    rows = {r["group"]: r["requests"] for r in report["rows"]}
    assert rows["litellm 1"] + rows["litellm 2"] == rows["fleet"], rows


def test_kill_9_of_one_process_fails_no_request(spark):
    normal = normal_time(spark)
    before = spark.main_pid(1)
    with spark.traffic() as traffic:
        time.sleep(2)
        ssh(spark.host, f"kill -9 {before}")
        time.sleep(4)
    judge(spark, traffic, normal, "kill -9 of one process")
    spark.both_answer()
    assert spark.main_pid(1) not in (0, before)


def test_kill_9_of_every_process_fails_no_request(spark):
    normal = normal_time(spark)
    with spark.traffic() as traffic:
        time.sleep(2)
        ssh(spark.host, f"kill -9 {spark.main_pid(1)} {spark.main_pid(2)}")
        time.sleep(2)
    figures = judge(spark, traffic, normal, "kill -9 of every process")
    spark.both_answer()
    # nothing answers until a process is back: what waited is the restart's time
    assert figures["longest_s"] < 60


def test_a_settings_change_restarts_the_processes_one_at_a_time(spark):
    normal = normal_time(spark)
    pids = (spark.main_pid(1), spark.main_pid(2))
    spark.write(litellm_num_retries=spark.settings.get("litellm_num_retries", 1) + 1)
    with spark.traffic() as traffic:
        result = spark.deploy()
    assert result.returncode == 0, result.output[-3000:]
    figures = judge(spark, traffic, normal, "settings change (rolling restart)")
    assert figures["longest_s"] <= normal + 1
    assert spark.main_pid(1) not in pids and spark.main_pid(2) not in pids


def test_a_litellm_upgrade_through_update_fails_no_request(spark):
    normal = normal_time(spark)
    spark.write(litellm_version="1.103.1")
    with spark.traffic() as traffic:
        result = spark.sparkstack("update", "--yes", timeout=1200)
    assert result.returncode == 0, result.stdout[-4000:]
    figures = judge(spark, traffic, normal, "LiteLLM upgrade through sparkstack update")
    assert figures["longest_s"] <= normal + 1
    version = ssh(spark.host, "/opt/sparkstack/litellm/current/bin/python -c 'import "
                              "importlib.metadata as m; print(m.version(\"litellm\"))'")
    assert version.stdout.strip() == "1.103.1"
    spark.both_answer()


def test_a_stream_cut_by_its_process_dying_is_logged_as_cut(spark):
    spark.write(slow=True)
    assert spark.deploy().returncode == 0
    key = spark.master_key("spark9")
    client = openai.OpenAI(base_url=f"{spark.base}/v1", api_key=key, max_retries=0)
    stream = client.chat.completions.create(
        model="slow", stream=True, max_tokens=64, timeout=60,
        messages=[{"role": "user", "content": "hi"}])
    chunks = iter(stream)
    next(chunks)  # under way: the client has its first event
    # the process serving it has it in its journal of streams under way
    for _ in range(50):
        holder = ssh(spark.host, "grep -l . /var/lib/sparkstack/litellm/streams-*.jsonl",
                     check=False).stdout
        if holder.strip():
            break
        time.sleep(0.1)
    process = int(holder.strip().rsplit("-", 1)[1].split(".")[0])
    ssh(spark.host, f"kill -9 {spark.main_pid(process)}")
    with pytest.raises(Exception):
        list(chunks)
    spark.both_answer()
    with spark.traffic() as traffic:  # the restarted process writes the row with the next
        time.sleep(3)
    assert traffic.failures() == []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        cut = spark.sql("SELECT requested, process, stream, final, error_class FROM "
                        "sparkstack_requests WHERE status = 'cut' AND requested = 'slow'")
        if cut:
            break
        time.sleep(1)
    assert cut == f"slow|{process}|t|t|LiteLLM process died", cut
