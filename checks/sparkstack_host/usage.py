"""What this Spark's LiteLLM answered, from its request log, aggregated in PostgreSQL.

    sparkstack-usage [--config-root DIR] [--since 7d] [--by profile|host|day|key|route|process]

prints one JSON object: per group, the requests (final rows only) answered locally, by
a fallback (a local profile answered by its cloud model) and by the cloud by design (a
cloud profile), the errors, tokens and cost, and each group's latencies as a histogram
(whole milliseconds below 100 ms, 2% buckets above, so that percentiles over several
LiteLLM hosts stay within 1%); and the requests over time by how they were answered.
`sparkstack usage` merges the hosts'. Windows over 6 hours read the rollups.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys

from .contract import (
    DEFAULT_CONFIG_ROOT,
    REQUEST_LOG_TABLE,
    USAGE_HOURLY_TABLE,
    USAGE_LATENCY_TABLE,
)
from .usage_rollups import DIMENSIONS, KIND, LATENCY_BUCKET

DAY = "to_char(at, 'YYYY-MM-DD')"
GROUPS = {**DIMENSIONS, "day": DAY}
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


def from_log(by: str, where: str, step: str) -> tuple[str, str]:
    """Counts (per group, kind and step) and latency histograms from the log's rows."""
    rows = f"FROM {REQUEST_LOG_TABLE} WHERE final AND {where}"
    counts = (f"SELECT {GROUPS[by]} AS g, {KIND} AS kind, date_trunc('{step}', at) AS t, "
              "count(*) AS n, sum(input_tokens) AS i, sum(output_tokens) AS o, "
              f"sum(cost) AS c {rows} GROUP BY 1, 2, 3")
    latency = (f"SELECT {GROUPS[by]} AS g, {LATENCY_BUCKET} AS ms, count(*) AS n {rows} "
               "AND latency_ms IS NOT NULL GROUP BY 1, 2")
    return counts, latency


def from_rollups(by: str, hours_from: str, days_from: str) -> tuple[str, str]:
    """The same, from the rollups' whole hours (counts) and whole days (latency)."""
    dim = "profile" if by == "day" else by
    counts = ("SELECT " + ("to_char(hour, 'YYYY-MM-DD')" if by == "day" else "g") +
              " AS g, kind, hour AS t, n, input_tokens AS i, output_tokens AS o, cost AS c "
              f"FROM {USAGE_HOURLY_TABLE} WHERE dim = '{dim}' AND hour >= {hours_from}")
    latency = ("SELECT " + ("to_char(day, 'YYYY-MM-DD')" if by == "day" else "g") +
               f" AS g, ms, n FROM {USAGE_LATENCY_TABLE} "
               f"WHERE dim = '{dim}' AND day >= {days_from}")
    return counts, latency


def query(since: str, by: str) -> str:
    """Counts and latency histograms for the window: from the log's rows alone for a
    window of up to 6 hours; for longer ones from the rollups' whole hours and days, and
    the log's rows only for the part of the first hour and day the rollups cannot split.
    Either way every request is counted once and exactly."""
    n, unit = interval(since)
    step = bucket(since)
    start = f"now() - make_interval({unit} => {n})"
    if step == "minute":
        counts, latency = from_log(by, f"at >= {start}", step)
    else:
        hours_from = f"date_trunc('hour', {start}) + interval '1 hour'"
        days_from = f"date_trunc('day', {start}) + interval '1 day'"
        rolled = from_rollups(by, hours_from, days_from)
        first_hour, _ = from_log(by, f"at >= {start} AND at < {hours_from}", "hour")
        _, first_day = from_log(by, f"at >= {start} AND at < {days_from}", step)
        counts = f"{rolled[0]} UNION ALL {first_hour}"
        latency = f"{rolled[1]} UNION ALL {first_day}"
    return f"""
WITH c AS MATERIALIZED ({counts}), l AS MATERIALIZED ({latency})
SELECT json_build_object(
  'groups', (SELECT coalesce(json_agg(x ORDER BY x.g), '[]') FROM (
     SELECT g, sum(n) AS requests,
            coalesce(sum(n) FILTER (WHERE kind = 'local'), 0) AS local,
            coalesce(sum(n) FILTER (WHERE kind = 'fallback'), 0) AS fallback,
            coalesce(sum(n) FILTER (WHERE kind = 'cloud'), 0) AS cloud,
            coalesce(sum(n) FILTER (WHERE kind = 'error'), 0) AS errors,
            sum(i) AS input_tokens, sum(o) AS output_tokens, sum(c) AS cost,
            coalesce(sum(c) FILTER (WHERE kind = 'fallback'), 0) AS fallback_cost
     FROM c GROUP BY g) x),
  'latency', (SELECT coalesce(json_agg(y), '[]') FROM (
     SELECT g, ms, sum(n) AS n FROM l GROUP BY g, ms) y),
  'series', (SELECT coalesce(json_agg(z ORDER BY z.t), '[]') FROM (
     SELECT to_char(date_trunc('{step}', t), 'YYYY-MM-DD"T"HH24:MI') AS t, kind,
            sum(n) AS n FROM c GROUP BY 1, kind) z),
  'step', '{step}')"""


def run(since: str, by: str) -> dict:
    # Hours and days are UTC's, as the rollups keep them.
    proc = subprocess.run(["runuser", "-u", "postgres", "--", "psql", "-d", "litellm",
                           "-XAtq", "-v", "ON_ERROR_STOP=1", "-c", query(since, by)],
                          capture_output=True, text=True, cwd="/",
                          env={**os.environ, "PGOPTIONS": "-c TimeZone=UTC"})
    if proc.returncode != 0:
        if 'relation "sparkstack_' in proc.stderr and "does not exist" in proc.stderr:
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
