"""What this Spark's LiteLLM answered, from its request log, aggregated in PostgreSQL.

    sparkstack-usage [--config-root DIR] [--since 7d] [--by profile|host|day|key]

prints one JSON object: per group, the requests (final rows only) answered locally, by
a fallback (a local profile answered by its cloud model) and by the cloud by design (a
cloud profile), the errors, tokens and cost, and each group's latencies as a histogram
of whole milliseconds (so that percentiles over several LiteLLM hosts stay exact); and
the requests over time by how they were answered. `sparkstack usage` merges the hosts'.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys

from .contract import DEFAULT_CONFIG_ROOT, REQUEST_LOG_TABLE

KIND = ("CASE WHEN status <> 'ok' THEN 'error' "
        "WHEN route = 'fallback' OR fallbacks > 0 THEN 'fallback' "
        "WHEN route = 'cloud' THEN 'cloud' ELSE 'local' END")
GROUPS = {
    "profile": "requested",
    "host": "CASE WHEN served_host <> '' THEN served_host "
            "WHEN status = 'ok' THEN 'cloud' ELSE 'none' END",
    "day": "to_char(at, 'YYYY-MM-DD')",
    "key": "CASE WHEN key_alias <> '' THEN key_alias ELSE left(key_hash, 12) END",
}
UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def interval(since: str) -> tuple[int, str]:
    m = re.fullmatch(r"(\d+)([mhdw])", since)
    if not m or int(m.group(1)) < 1:
        raise ValueError(f"since = {since!r}: give a number and a unit, e.g. 30m, 12h, 7d, 4w")
    return int(m.group(1)), UNITS[m.group(2)]


def bucket(since: str) -> str:
    """The charts' time step: minutes up to 6 hours, hours up to 14 days, then days."""
    n, unit = interval(since)
    hours = n * {"minutes": 1 / 60, "hours": 1, "days": 24, "weeks": 168}[unit]
    return "minute" if hours <= 6 else "hour" if hours <= 24 * 14 else "day"


def query(since: str, by: str) -> str:
    """One scan of the log: three groupings at once (group x kind, group x latency,
    time x kind), then shaped into JSON from their few thousand rows."""
    n, unit = interval(since)
    step = bucket(since)
    # GROUPING() bits, in the order g, kind, ms, t: 1 for a column a set leaves out
    by_kind, by_ms, by_time = 0b0011, 0b0101, 0b1010
    return f"""
WITH a AS MATERIALIZED (
  SELECT g, kind, ms, t, GROUPING(g, kind, ms, t) AS set, count(*) AS n,
         sum(input_tokens) AS i, sum(output_tokens) AS o, sum(cost) AS c
  FROM (SELECT {GROUPS[by]} AS g, {KIND} AS kind, round(latency_ms)::int AS ms,
               input_tokens, output_tokens, cost, date_trunc('{step}', at) AS t
        FROM {REQUEST_LOG_TABLE}
        WHERE final AND at >= now() - make_interval({unit} => {n})) r
  GROUP BY GROUPING SETS ((g, kind), (g, ms), (t, kind)))
SELECT json_build_object(
  'groups', (SELECT coalesce(json_agg(x ORDER BY x.g), '[]') FROM (
     SELECT g, sum(n) AS requests,
            coalesce(sum(n) FILTER (WHERE kind = 'local'), 0) AS local,
            coalesce(sum(n) FILTER (WHERE kind = 'fallback'), 0) AS fallback,
            coalesce(sum(n) FILTER (WHERE kind = 'cloud'), 0) AS cloud,
            coalesce(sum(n) FILTER (WHERE kind = 'error'), 0) AS errors,
            sum(i) AS input_tokens, sum(o) AS output_tokens, sum(c) AS cost,
            coalesce(sum(c) FILTER (WHERE kind = 'fallback'), 0) AS fallback_cost
     FROM a WHERE set = {by_kind} GROUP BY g) x),
  'latency', (SELECT coalesce(json_agg(y), '[]') FROM (
     SELECT g, ms, n FROM a WHERE set = {by_ms} AND ms IS NOT NULL) y),
  'series', (SELECT coalesce(json_agg(z ORDER BY z.t), '[]') FROM (
     SELECT to_char(t, 'YYYY-MM-DD"T"HH24:MI') AS t, kind, n
     FROM a WHERE set = {by_time}) z),
  'step', '{step}')"""


def run(since: str, by: str) -> dict:
    proc = subprocess.run(["runuser", "-u", "postgres", "--", "psql", "-d", "litellm",
                           "-XAtq", "-v", "ON_ERROR_STOP=1", "-c", query(since, by)],
                          capture_output=True, text=True, cwd="/")
    if proc.returncode != 0:
        if f'relation "{REQUEST_LOG_TABLE}" does not exist' in proc.stderr:
            return {"groups": [], "latency": [], "series": [], "step": bucket(since)}
        raise RuntimeError(proc.stderr.strip()[-500:])
    return json.loads(proc.stdout)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="sparkstack-usage")
    p.add_argument("--config-root", default=DEFAULT_CONFIG_ROOT)
    p.add_argument("--since", default="7d")
    p.add_argument("--by", choices=sorted(GROUPS), default="profile")
    args = p.parse_args(argv)
    try:
        print(json.dumps(run(args.since, args.by)))
    except (ValueError, RuntimeError) as e:
        print(f"usage: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
