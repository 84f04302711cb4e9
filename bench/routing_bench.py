"""Task-aware routing: what a routing decision adds, and how well the rules pick.

    .venv/bin/python -m bench.routing_bench [--engine] [--repeat 20]

Without --engine (seconds, no host): the rules layer as LiteLLM's pre-call hook runs
it (`sparkstack_host.auto_route.decide`), timed over the labeled prompts of
bench/routing_prompts.py (240, four classes) and over long documents, p50 and p99; and
the rules' accuracy per class, for the default auto profile and for the README's example
(the defaults plus a live-data rule to `cloud`).

With --engine (minutes, as root): a simulated Spark with the real CPU vLLM engine and
the test model as the auto profile's classifier (no rules, so every request asks it),
deployed by the real deploy. Each labeled prompt goes through LiteLLM to `auto`; the
classifier's time comes from the x-sparkstack-route header; its budget must hold. Then
the end-to-end p50 of `fast` asked directly, `auto` decided by a hint (rules), and
`auto` decided by the classifier. The test model is random: its labels say nothing
about accuracy, only that the answer is always a label; a classifier's accuracy can
only be measured with a real small instruct model on a Spark.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import statistics
import time
from collections import Counter, defaultdict

import openai
from sparkstack_host.auto_route import decide

from bench.routing_prompts import EXPECTED, PROMPTS
from sparkstack.settings import load_defaults

LIVE_RULE = {"profile": "cloud", "pattern": (
    r"(?i)\b(today|tonight|tomorrow|right now|at the moment|this (week|month|morning|"
    r"weekend)|latest|current(ly)?|score|headlines|share price|stock market|weather|"
    r"forecast|traffic|trending|delays?)\b")}


def route_of(rules: list[dict]) -> dict:
    serving = ["fast", "expert", "code", "cloud"]
    return {"names": ["auto"], "default": "fast", "hints": serving, "rules": rules,
            "classifier": None}


def default_rules() -> list[dict]:
    return load_defaults()["profiles"]["auto"]["routes"]["rules"]


def example_rules() -> list[dict]:
    """The README's example: a live-data rule before the code and expert patterns."""
    rules = default_rules()
    return rules[:2] + [LIVE_RULE] + rules[2:]


def pct(values: list[float], share: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(share * len(values)))]


def rules_latency(repeat: int) -> None:
    route = route_of(example_rules())
    long_doc = "The quarterly figures were stable across regions. " * 4000  # ~50k tokens
    cases = [{"model": "auto", "messages": [{"role": "user", "content": p}]}
             for _, p in PROMPTS]
    long_cases = [{"model": "auto", "messages": [
        {"role": "user", "content": long_doc + f"\nQuestion {i}: summarise."}]}
        for i in range(20)]

    async def time_all(items: list[dict]) -> list[float]:
        took = []
        for _ in range(repeat):
            for data in items:
                start = time.perf_counter()
                await decide(route, data)
                took.append((time.perf_counter() - start) * 1000)
        return took

    short, long_ = asyncio.run(time_all(cases)), asyncio.run(time_all(long_cases))
    print(f"rules decision (in LiteLLM's hook, {repeat}x each):")
    print(f"  240 labeled prompts: p50 {pct(short, 0.5):.3f} ms, p99 {pct(short, 0.99):.3f} ms")
    print(f"  20 documents of ~200 kB: p50 {pct(long_, 0.5):.3f} ms, "
          f"p99 {pct(long_, 0.99):.3f} ms")


def accuracy(name: str, rules: list[dict], expected: dict[str, str]) -> None:
    route = route_of(rules)
    right, total = Counter(), Counter()
    wrong: dict[str, Counter] = defaultdict(Counter)
    for cls, prompt in PROMPTS:
        d = asyncio.run(decide(route, {"model": "auto",
                                       "messages": [{"role": "user", "content": prompt}]}))
        total[cls] += 1
        if d.profile == expected[cls]:
            right[cls] += 1
        else:
            wrong[cls][d.profile] += 1
    print(f"rules accuracy, {name}:")
    for cls in EXPECTED:
        misses = ", ".join(f"{n} to {p}" for p, n in wrong[cls].most_common())
        print(f"  {cls:<9} -> {expected[cls]:<7} {right[cls]:>3}/{total[cls]} "
              f"({100 * right[cls] / total[cls]:5.1f}%)" + (f"  missed: {misses}" if misses else ""))
    print(f"  all: {sum(right.values())}/{len(PROMPTS)} "
          f"({100 * sum(right.values()) / len(PROMPTS):.1f}%)")


def engine_run(budget_ms: int) -> None:
    from sparkstack.simulated import engine, fleet
    from sparkstack.simulated.inventory import real_engine_models, write_inventory
    from tests.doubles.cloud_standin import CloudStandin
    from tests.e2e.helpers import run_deploy

    if problem := engine.real_engine_problem():
        raise SystemExit(f"the real vLLM engine cannot run here: {problem}")
    fleet.down_all()
    hub = fleet.ensure_hub()
    tmp = fleet.STATE / "bench-routing"
    tmp.mkdir(parents=True, exist_ok=True)
    labels = {"code": "writing, fixing or explaining code",
              "expert": "research, analysis, long or hard questions",
              "fast": "quick questions and chat",
              "cloud": "questions that need today's data: news, prices, weather"}
    group = real_engine_models(hub)
    group["profiles"]["auto"] = {"title": "Auto", "routes": {
        "default": "fast", "hints": True, "rules": [],
        "classifier": {"model": "tiny-chat", "budget_ms": budget_ms, "labels": labels}}}
    with CloudStandin(fleet.BRIDGE_ADDR) as cloud:
        host = fleet.boot("spark9", 9)
        inventory = write_inventory(tmp / "inventory.py", [host], {
            **group, "secrets_dir": str(tmp / "secrets"), "cloud_api_base": cloud.api_base,
            "cloud_api_key": cloud.api_key},
            {"spark9": {"roles": ["postgres", "vllm", "litellm"],
                        "litellm_bind_address": host.address}}, vllm=engine.REAL, hub=hub)
        deployed = run_deploy(inventory)
        assert deployed.returncode == 0, deployed.output[-3000:]
        key = json.loads((tmp / "secrets" / "hosts" / "spark9.json").read_text())[
            "litellm_master_key"]
        client = openai.OpenAI(base_url=f"http://{host.address}:4000/v1", api_key=key,
                               max_retries=0)

        def ask(model: str, text: str) -> tuple[float, dict]:
            start = time.perf_counter()
            raw = client.chat.completions.with_raw_response.create(
                model=model, max_tokens=1, messages=[{"role": "user", "content": text}])
            return (time.perf_counter() - start) * 1000, raw.headers

        for _ in range(5):  # warm up
            ask("auto", "hello")
        classifier_ms, labels_seen, over = [], Counter(), 0
        for _, prompt in PROMPTS:
            _, headers = ask("auto", prompt)
            why = headers["x-sparkstack-route"]
            m = re.search(r"\((\d+) ms\)", why)
            if why.startswith("classifier: ") and m:
                classifier_ms.append(float(m.group(1)))
                labels_seen[headers["x-sparkstack-profile"]] += 1
            else:
                over += 1
        print(f"classifier on the CPU test engine (budget {budget_ms} ms), 240 prompts:")
        print(f"  answered a label: {len(classifier_ms)}/240 {dict(labels_seen)}; "
              f"fell back to the default: {over}")
        if classifier_ms:
            print(f"  classifier time: p50 {pct(classifier_ms, 0.5):.0f} ms, "
                  f"p99 {pct(classifier_ms, 0.99):.0f} ms, max {max(classifier_ms):.0f} ms")
        end_to_end = {name: [ask(model, text)[0] for _ in range(60)]
                      for name, model, text in (
                          ("fast, asked directly", "fast", "hello"),
                          ("auto, by a hint (rules)", "auto", "hello #fast"),
                          ("auto, by the classifier", "auto", "hello"))}
        base = statistics.median(end_to_end["fast, asked directly"])
        print("end to end through LiteLLM, one token, 60 requests each:")
        for name, took in end_to_end.items():
            print(f"  {name:<26} p50 {statistics.median(took):6.1f} ms  "
                  f"p99 {pct(took, 0.99):6.1f} ms  (added p50 "
                  f"{statistics.median(took) - base:+.1f} ms)")
    fleet.down_all()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--repeat", type=int, default=20)
    p.add_argument("--engine", action="store_true",
                   help="also measure the classifier on a simulated Spark's CPU engine")
    p.add_argument("--budget-ms", type=int, default=1000)
    args = p.parse_args()
    rules_latency(args.repeat)
    accuracy("the default auto profile (live data is not routed: it goes to fast)",
             default_rules(), {**EXPECTED, "live": "fast"})
    accuracy("the README's example (live data to cloud)", example_rules(), EXPECTED)
    if args.engine:
        engine_run(args.budget_ms)


if __name__ == "__main__":
    main()
