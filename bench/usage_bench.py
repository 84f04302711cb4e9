"""The request log and the usage report on a simulated Spark (as root, from the repo root):

    .venv/bin/python -m bench.usage_bench [--rows 1000000] [--requests 300]

Deploys one Spark (PostgreSQL, LiteLLM, vLLM stand-in), fills its request log with
`--rows` requests spread over the last 7 days (profiles, hosts, keys, local, fallback,
cloud and errors in fixed shares; as one batch of the log's writer, so the rollups are
kept too), then prints:
- `sparkstack usage --since 7d` over them, as a table, `--json` and `--html` (median of
  3 each; target <= 2 s);
- a request's median latency through LiteLLM with the request log on and off, the same
  traffic (`--requests` sequential chat completions on `fast`, served by the stand-in,
  after 20 warm-up requests), measured on, off, on, off (target: on adds <= 2 ms),
  with the medians of LiteLLM's own `x-litellm-overhead-duration-ms` and
  `x-litellm-callback-duration-ms` headers to show where the time goes.
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

import openai
from sparkstack_host.usage_rollups import APPLY_BATCH, CREATE_BATCH

from sparkstack.settings import REPO_ROOT
from sparkstack.simulated import fleet
from sparkstack.simulated.fleet import ssh
from sparkstack.simulated.inventory import write_inventory
from tests.doubles.cloud_standin import CloudStandin
from tests.e2e.helpers import run_deploy

SPARKSTACK = str(Path(sys.executable).with_name("sparkstack"))

# One row per generated number i: the shares below repeat every 100 rows. They go in as
# one batch of the request log's writer would: to the log and its rollups together.
FILL = """
INSERT INTO sparkstack_batch (at, trace_id, final, key_hash, key_alias, requested,
  served, served_host, route, fallbacks, input_tokens, output_tokens, latency_ms, ttft_ms,
  stream, status, error_class, cost)
SELECT now() - (i % 604800) * interval '1 second', md5(i::text), true,
  md5((i % 7)::text), CASE WHEN i % 3 = 0 THEN 'team-' || (i % 5) ELSE '' END,
  (ARRAY['fast','code','expert','cloud','claude-sonnet-4-5'])[1 + i % 5],
  CASE WHEN i % 100 < 80 THEN 'qwen3-4b' ELSE 'openrouter/fast' END,
  CASE WHEN i % 100 < 80 THEN 'spark' || (1 + i % 4) ELSE '' END,
  CASE WHEN i % 100 < 80 THEN 'local' WHEN i % 100 < 85 THEN 'fallback' ELSE 'cloud' END,
  CASE WHEN i % 100 BETWEEN 80 AND 84 THEN 1 ELSE 0 END,
  20 + i % 500, 1 + i % 300, 40 + (i::bigint * 7919) % 4000, CASE WHEN i % 4 = 0 THEN 30 END,
  i % 4 = 0, CASE WHEN i % 100 = 99 THEN 'error' ELSE 'ok' END,
  CASE WHEN i % 100 = 99 THEN 'BadRequestError' ELSE '' END,
  CASE WHEN i % 100 >= 80 THEN 0.00002 ELSE 0 END
FROM generate_series(1, {rows}) AS i
"""


def fill_sql(rows: int) -> str:
    return ";\n".join(["BEGIN", CREATE_BATCH, FILL.format(rows=rows), *APPLY_BATCH,
                       "COMMIT", "ANALYZE sparkstack_requests", ""])


def psql(host, sql: str) -> str:
    proc = ssh(host, "cd / && runuser -u postgres -- psql -d litellm -XAtq -v "
                     f"ON_ERROR_STOP=1 -c {shlex.quote(sql)}", check=False)
    if proc.returncode != 0:
        raise SystemExit(f"psql failed: {proc.stderr.strip()}")
    return proc.stdout.strip()


def median_seconds(command: list[str], runs: int = 3) -> float:
    times = []
    for _ in range(runs):
        start = time.monotonic()
        subprocess.run(command, cwd=REPO_ROOT, check=True, stdout=subprocess.DEVNULL)
        times.append(time.monotonic() - start)
    return statistics.median(times)


def median_latency_ms(base: str, key: str, requests: int) -> tuple[float, float, float]:
    """Median client latency, and the medians of LiteLLM's own headers: its overhead
    over the model call and the time it spent building logging payloads (ms)."""
    client = openai.OpenAI(base_url=f"{base}/v1", api_key=key, max_retries=0)
    hi = [{"role": "user", "content": "hi"}]
    times, overhead, callbacks = [], [], []
    for i in range(20 + requests):
        start = time.perf_counter()
        raw = client.chat.completions.with_raw_response.create(model="fast", messages=hi,
                                                                max_tokens=8)
        raw.parse()
        if i >= 20:
            times.append(1000 * (time.perf_counter() - start))
            overhead.append(float(raw.headers.get("x-litellm-overhead-duration-ms") or 0))
            callbacks.append(float(raw.headers.get("x-litellm-callback-duration-ms") or 0))
    return (statistics.median(times), statistics.median(overhead),
            statistics.median(callbacks))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--requests", type=int, default=300)
    args = p.parse_args()
    work = REPO_ROOT / ".sim" / "bench-usage"
    fleet.down_all()
    fleet.ensure_network()
    with CloudStandin(fleet.BRIDGE_ADDR) as cloud:
        cloud.server.RequestHandlerClass.log_message = lambda *a: None  # quiet
        host = fleet.boot("spark1", 1)

        def deploy(request_log: bool) -> Path:
            inv = write_inventory(work / "inventory.py", [host], {
                "secrets_dir": str(work / "secrets"), "cloud_api_base": cloud.api_base,
                "cloud_api_key": cloud.api_key, "request_log": request_log},
                {host.name: {"roles": ["postgres", "vllm", "litellm"],
                             "litellm_bind_address": host.address}})
            result = run_deploy(inv)
            if result.returncode != 0:
                raise SystemExit(result.output[-3000:])
            return inv

        inv = deploy(True)
        key = json.loads((work / "secrets" / "hosts" / "spark1.json").read_text())[
            "litellm_master_key"]
        base = f"http://{host.address}:4000"
        median_latency_ms(base, key, 1)  # the table exists once a request was logged
        time.sleep(3)
        start = time.monotonic()
        psql(host, fill_sql(args.rows))
        rows = psql(host, "SELECT count(*) FROM sparkstack_requests WHERE final")
        print(f"request log filled with {args.rows:,} requests over 7 days in "
              f"{time.monotonic() - start:.1f} s ({rows} final rows in all)")
        usage = [SPARKSTACK, "usage", "-i", str(inv), "--since", "7d"]
        for label, extra in (("table", []), ("--json", ["--json"]),
                             ("--html", ["--html", str(work / "usage.html")]),
                             ("--by host", ["--by", "host"])):
            seconds = median_seconds(usage + extra)
            print(f"sparkstack usage --since 7d {label} over {int(rows):,} rows "
                  f"(median of 3): {seconds:.2f} s (target <= 2 s)")
        runs = []
        for label, logging_on in (("on", True), ("off", False), ("on again", True),
                                  ("off again", False)):
            if runs:
                deploy(logging_on)
            runs.append((label, logging_on, *median_latency_ms(base, key, args.requests)))
        for label, _, total, overhead, callbacks in runs:
            print(f"    logging {label:9}: median {total:6.2f} ms through LiteLLM "
                  f"(its overhead {overhead:5.2f} ms, logging payloads {callbacks:5.2f} ms)")
        on = statistics.mean(r[2] for r in runs if r[1])
        off = statistics.mean(r[2] for r in runs if not r[1])
        print(f"median latency over {args.requests} requests: logging adds {on - off:+.2f} ms "
              "(target <= 2 ms)")
    fleet.down_all()


if __name__ == "__main__":
    main()
