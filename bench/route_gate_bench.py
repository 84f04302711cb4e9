"""The readiness gate under traffic, on a simulated Spark (run as root on the controller):

    .venv/bin/python -m bench.route_gate_bench [--restarts 3] [--clients 4]

Deploys one full-stack Spark (with the cloud stand-in as the cloud), then restarts the
`fast` model's unit several times while clients (openai SDK, no retries) keep asking
`fast`. Each restart takes the route out (LiteLLM reloads its routes in place), waits
for the model's requests to finish, reloads the model and puts the route back. Prints
failed requests, request latency (median, p99, max) in steady state and during the
restarts, and how long each restart kept `fast` on the cloud.
"""

from __future__ import annotations

import argparse
import json
import statistics
import threading
import time

import openai

from sparkstack.settings import REPO_ROOT as REPO
from sparkstack.simulated import fleet
from sparkstack.simulated.fleet import ssh
from sparkstack.simulated.inventory import write_inventory
from tests.doubles.cloud_standin import CloudStandin
from tests.e2e.helpers import Tunnel, run_deploy

UNIT = "sparkstack-vllm-qwen3-4b.service"


class Traffic:
    """Clients asking `fast` in a loop; each answer as (start, seconds, who, error)."""

    def __init__(self, client: openai.OpenAI, clients: int):
        self.client, self.results, self.stop = client, [], threading.Event()
        self.threads = [threading.Thread(target=self.loop) for _ in range(clients)]

    def loop(self):
        while not self.stop.is_set():
            start = time.monotonic()
            try:
                reply = self.client.chat.completions.create(
                    model="fast", messages=[{"role": "user", "content": "hi"}],
                    max_tokens=4, timeout=120)
                who, error = reply.choices[0].message.content.split(":")[0], None
            except Exception as e:  # what a client would see
                who, error = None, repr(e)
            self.results.append((start, time.monotonic() - start, who, error))
            time.sleep(0.05)

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for t in self.threads:
            t.join()


def latency(rows) -> str:
    secs = sorted(r[1] for r in rows)
    if not secs:
        return "no requests"
    p99 = secs[min(len(secs) - 1, int(len(secs) * 0.99))]
    return (f"{len(secs)} requests, median {statistics.median(secs) * 1000:.0f} ms, "
            f"p99 {p99 * 1000:.0f} ms, max {secs[-1] * 1000:.0f} ms")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--restarts", type=int, default=3)
    p.add_argument("--clients", type=int, default=4)
    args = p.parse_args()
    work = REPO / ".sim" / "bench-gate"
    fleet.down_all()
    fleet.ensure_network()
    with CloudStandin(fleet.BRIDGE_ADDR) as cloud:
        cloud.server.RequestHandlerClass.log_message = lambda *a: None  # quiet
        host = fleet.boot("spark1", 1)
        inventory = write_inventory(
            work / "inventory.py", [host],
            {"secrets_dir": str(work / "secrets"), "cloud_api_base": cloud.api_base,
             "cloud_api_key": cloud.api_key})
        first = run_deploy(inventory)
        if first.returncode != 0:
            raise SystemExit(first.output[-3000:])
        master = json.loads((work / "secrets" / "hosts" / "spark1.json").read_text())[
            "litellm_master_key"]
        tunnel = Tunnel(host, 4000)
        client = openai.OpenAI(base_url=tunnel.url + "/v1", api_key=master, max_retries=0)
        windows = []
        with Traffic(client, args.clients) as traffic:
            time.sleep(10)
            steady_end = time.monotonic()
            for _ in range(args.restarts):
                start = time.monotonic()
                ssh(host, f"systemctl restart {UNIT}")
                windows.append((start, time.monotonic()))
                time.sleep(8)
        tunnel.close()
        rows = traffic.results
        steady = [r for r in rows if r[0] < steady_end]
        during = [r for r in rows if any(a <= r[0] <= b for a, b in windows)]
        failed = [r for r in rows if r[3]]
        print(f"requests: {len(rows)} from {args.clients} clients, failed: {len(failed)}")
        for r in failed[:5]:
            print(f"    {r[3]}")
        print(f"steady state (local model): {latency(steady)}")
        print(f"during {args.restarts} restarts of {UNIT}: {latency(during)}")
        for i, (a, b) in enumerate(windows, 1):
            cloud_rows = [r for r in rows if a <= r[0] <= b + 8 and r[2] == "cloud-standin"]
            span = (max(r[0] for r in cloud_rows) - min(r[0] for r in cloud_rows)
                    if cloud_rows else 0)
            print(f"restart {i}: systemctl restart took {b - a:.1f} s; fast answered by "
                  f"the cloud for {span:.1f} s ({len(cloud_rows)} requests)")
    fleet.down_all()


if __name__ == "__main__":
    main()
