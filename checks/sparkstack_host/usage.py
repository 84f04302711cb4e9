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
    n, unit = interval(since)
    step = bucket(since)
    return f"""
WITH r AS MATERIALIZED (
  SELECT {GROUPS[by]} AS g, {KIND} AS kind, round(latency_ms)::int AS ms,
         input_tokens, output_tokens, cost, date_trunc('{step}', at) AS t
  FROM {REQUEST_LOG_TABLE} WHERE final AND at >= now() - make_interval({unit} => {n}))
SELECT json_build_object(
  'groups', (SELECT coalesce(json_agg(x ORDER BY x.g), '[]') FROM (
     SELECT g, count(*) AS requests,
            count(*) FILTER (WHERE kind = 'local') AS local,
            count(*) FILTER (WHERE kind = 'fallback') AS fallback,
            count(*) FILTER (WHERE kind = 'cloud') AS cloud,
            count(*) FILTER (WHERE kind = 'error') AS errors,
            sum(input_tokens) AS input_tokens, sum(output_tokens) AS output_tokens,
            sum(cost) AS cost, coalesce(sum(cost) FILTER (WHERE kind = 'fallback'), 0)
              AS fallback_cost
     FROM r GROUP BY g) x),
  'latency', (SELECT coalesce(json_agg(y), '[]') FROM (
     SELECT g, ms, count(*) AS n FROM r WHERE ms IS NOT NULL GROUP BY g, ms) y),
  'series', (SELECT coalesce(json_agg(z ORDER BY z.t), '[]') FROM (
     SELECT to_char(t, 'YYYY-MM-DD"T"HH24:MI') AS t, kind, count(*) AS n
     FROM r GROUP BY t, kind) z),
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
