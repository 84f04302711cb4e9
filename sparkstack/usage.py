"""`sparkstack usage`: what the platform answered, from the request logs of every
LiteLLM host, merged: per group and for the fleet, requests, the shares answered
locally, by fallback and by the cloud by design, errors, tokens, p50/p95 latency, cost,
and the headline ("local answered 93.0% of 12,345 requests; fallback cost $0.00")."""

from __future__ import annotations

import math
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor

from sparkstack_host.contract import USAGE

from .host_shell import shells_of
from .settings import load_defaults

KINDS = ("local", "fallback", "cloud", "errors")
SUMS = ("requests", *KINDS, "input_tokens", "output_tokens", "cost", "fallback_cost")


def percentile(histogram: dict[int, int], share: float) -> float | None:
    """The nearest-rank percentile of a latency histogram (bucket in ms -> count)."""
    total = sum(histogram.values())
    if not total:
        return None
    rank, seen = max(1, math.ceil(share * total)), 0
    for ms in sorted(histogram):
        seen += histogram[ms]
        if seen >= rank:
            return float(ms)
    return float(max(histogram))


def merge(answers: list[dict]) -> dict:
    """The hosts' answers as one report: groups, a fleet total, the series."""
    groups: dict[str, dict] = defaultdict(lambda: dict.fromkeys(SUMS, 0))
    latency: dict[str, dict[int, int]] = defaultdict(lambda: defaultdict(int))
    series: dict[tuple[str, str], int] = defaultdict(int)
    for answer in answers:
        for row in answer["groups"]:
            for key in SUMS:
                groups[row["g"]][key] += row[key] or 0
        for row in answer["latency"]:
            latency[row["g"]][row["ms"]] += row["n"]
            latency["*"][row["ms"]] += row["n"]
        for row in answer["series"]:
            series[(row["t"], row["kind"])] += row["n"]
    total = dict.fromkeys(SUMS, 0)
    for row in groups.values():
        for key in SUMS:
            total[key] += row[key]
    rows = []
    for name, row in sorted(groups.items()) + [("fleet", total)]:
        hist = latency["*" if name == "fleet" else name]
        done = row["requests"] or 1
        rows.append({"group": name, **row,
                     **{f"{k}_share": round(100 * row[k] / done, 1) for k in KINDS},
                     "p50_ms": percentile(hist, 0.50), "p95_ms": percentile(hist, 0.95),
                     "cost": round(row["cost"], 6),
                     "fallback_cost": round(row["fallback_cost"], 6)})
    return {"rows": rows, "headline": headline(total),
            "series": [{"t": t, "kind": k, "n": n} for (t, k), n in sorted(series.items())],
            "step": next((a["step"] for a in answers), "hour")}


def headline(total: dict) -> str:
    share = 100 * total["local"] / total["requests"] if total["requests"] else 0.0
    return (f"local answered {share:.1f}% of {total['requests']:,} requests; fallback "
            f"cost ${total['fallback_cost']:.2f}")


def run(inventory_path: str, limit: tuple[str, ...], since: str, by: str) -> dict:
    defaults = load_defaults()
    shells = [shell for shell in shells_of(inventory_path, limit)
              if "litellm" in (shell.host.data.get("roles") or defaults["roles"])]
    if not shells:
        raise RuntimeError("no host of the inventory runs LiteLLM")
    with ThreadPoolExecutor(max_workers=len(shells)) as pool:
        report = merge(list(pool.map(
            lambda shell: shell.program_json(USAGE, "--since", since, "--by", by), shells)))
    report.update(since=since, by=by, hosts=[shell.name for shell in shells])
    return report


def table(report: dict) -> str:
    head = (f"{report['by']:22} {'requests':>9} {'local':>7} {'fallback':>9} {'cloud':>7} "
            f"{'errors':>7} {'tokens in/out':>15} {'p50':>7} {'p95':>7} {'cost':>9}")
    lines = [head]
    for r in report["rows"]:
        ms = lambda v: "-" if v is None else f"{v:.0f}ms"
        lines.append(
            f"{r['group'][:22]:22} {r['requests']:9,} {r['local_share']:6.1f}% "
            f"{r['fallback_share']:8.1f}% {r['cloud_share']:6.1f}% {r['errors']:7,} "
            f"{r['input_tokens']:>7,}/{r['output_tokens']:<7,} {ms(r['p50_ms']):>7} "
            f"{ms(r['p95_ms']):>7} ${r['cost']:8.4f}")
    lines.append(report["headline"])
    return "\n".join(lines)
