"""The request log's rollups: what a row counts as, and the SQL that keeps the rollups.

A report over days reads the rollups (thousands of rows) instead of the log (millions):
counts per UTC hour and latency histograms per UTC day, per profile, host, key
and auto route. The
request log's writer applies `APPLY_BATCH` to each batch in the transaction that stores
the rows, so the rollups never disagree with the log; `rollup_from(REQUEST_LOG_TABLE)`
builds them once from a log kept before they existed.
"""

from __future__ import annotations

from .contract import (
    REQUEST_LOG_COLUMNS,
    REQUEST_LOG_TABLE,
    USAGE_HOURLY_TABLE,
    USAGE_LATENCY_TABLE,
)

# How a final row was answered: local, fallback (a local profile answered by its cloud
# model), cloud (a cloud profile) or error.
KIND = ("CASE WHEN status <> 'ok' THEN 'error' "
        "WHEN route = 'fallback' OR fallbacks > 0 THEN 'fallback' "
        "WHEN route = 'cloud' THEN 'cloud' ELSE 'local' END")
# A row's group for each dimension `sparkstack usage --by` offers (`day` is read from
# the hours).
DIMENSIONS = {
    "profile": "requested",
    "host": "CASE WHEN served_host <> '' THEN served_host "
            "WHEN status = 'ok' THEN 'cloud' ELSE 'none' END",
    # rows written before the log named the master key carry only LiteLLM's placeholder
    "key": "CASE WHEN key_alias <> '' THEN key_alias WHEN key_hash = "
           "'litellm_proxy_master_key' THEN 'master key' ELSE left(key_hash, 12) END",
    # what an auto profile picked and why; requests that named a profile are direct
    "route": "CASE WHEN auto_profile <> '' THEN requested || ' -> ' || auto_profile || "
             "' (' || auto_reason || ')' ELSE 'direct' END",
    # which LiteLLM process answered (rows from before the front door name none)
    "process": "CASE WHEN process <> '' THEN 'litellm ' || process ELSE 'one process' END",
}
# Latency histograms count whole milliseconds below 100 ms, then buckets 2% apart named
# by their centre, so a percentile read from them is within 1% of the exact one.
LATENCY_BUCKET = ("CASE WHEN latency_ms < 100 THEN round(latency_ms)::int "
                  "ELSE round(exp(round(ln(latency_ms) * 50) / 50))::int END")
BATCH_TABLE = "sparkstack_batch"
ROLLUP_LOCK = "SELECT pg_advisory_xact_lock(hashtext('sparkstack_usage_rollups'))"


def _group() -> str:
    whens = " ".join(f"WHEN '{dim}' THEN {expr}" for dim, expr in DIMENSIONS.items())
    return f"CASE d.dim {whens} END"


def rollup_from(source: str) -> list[str]:
    """Add the final rows of `source` (the log, or a batch of it) to the rollups."""
    dims = ", ".join(f"('{dim}')" for dim in DIMENSIONS)
    return [
        f"""INSERT INTO {USAGE_HOURLY_TABLE} AS r
  (hour, dim, g, kind, n, input_tokens, output_tokens, cost)
SELECT date_trunc('hour', at, 'UTC'), d.dim, {_group()}, {KIND}, count(*),
       sum(input_tokens), sum(output_tokens), sum(cost)
FROM {source} CROSS JOIN (VALUES {dims}) AS d(dim) WHERE final
GROUP BY 1, 2, 3, 4
ON CONFLICT (hour, dim, g, kind) DO UPDATE SET n = r.n + excluded.n,
  input_tokens = r.input_tokens + excluded.input_tokens,
  output_tokens = r.output_tokens + excluded.output_tokens, cost = r.cost + excluded.cost""",
        f"""INSERT INTO {USAGE_LATENCY_TABLE} AS r (day, dim, g, ms, n)
SELECT date_trunc('day', at, 'UTC'), d.dim, {_group()}, {LATENCY_BUCKET}, count(*)
FROM {source} CROSS JOIN (VALUES {dims}) AS d(dim)
WHERE final AND latency_ms IS NOT NULL
GROUP BY 1, 2, 3, 4
ON CONFLICT (day, dim, g, ms) DO UPDATE SET n = r.n + excluded.n""",
    ]


COLUMNS = ", ".join(REQUEST_LOG_COLUMNS)
# A batch arrives in a temporary table (by COPY), then goes to the log and the rollups.
CREATE_BATCH = (f"CREATE TEMP TABLE {BATCH_TABLE} ON COMMIT DROP AS "
                f"SELECT {COLUMNS} FROM {REQUEST_LOG_TABLE} WITH NO DATA")
APPLY_BATCH = [f"INSERT INTO {REQUEST_LOG_TABLE} ({COLUMNS}) SELECT {COLUMNS} "
               f"FROM {BATCH_TABLE}", *rollup_from(BATCH_TABLE)]


def prune(days_placeholder: str = "%s") -> list[str]:
    """Statements that drop the log's rows and rollups older than the retention."""
    cutoff = f"now() - make_interval(days => {days_placeholder})"
    return [f"DELETE FROM {REQUEST_LOG_TABLE} WHERE at < {cutoff}",
            f"DELETE FROM {USAGE_HOURLY_TABLE} WHERE hour < date_trunc('hour', {cutoff})",
            f"DELETE FROM {USAGE_LATENCY_TABLE} WHERE day < date_trunc('day', {cutoff})"]
