"""Write a pyinfra inventory for simulated Sparks.

The settings it adds are the same documented settings a user behind a firewall would
set: the machine's CA certificates, local wheel folders, and the vLLM stand-in as
`vllm_package` (there is no GPU here). Nothing in the deploy knows it is a simulation.
"""

from __future__ import annotations

import glob
import pprint
from pathlib import Path

from .fleet import SSH_KEY, SimHost

TORCH_CPU_WHEEL = "/opt/wheels/torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl"


def sim_group_data(**overrides) -> dict:
    data = {
        "ssh_user": "root",
        "ssh_key": str(SSH_KEY),
        "ssh_known_hosts_file": "/dev/null",
        "ssh_strict_host_key_checking": "off",
        # The registries are reached through a TLS-intercepting proxy whose CA the
        # hosts must trust (exactly what extra_ca_certificates is for).
        "extra_ca_certificates": sorted(glob.glob("/usr/local/share/ca-certificates/*.crt")),
        "pip_find_links": ["/opt/sparkstack-test-wheels"],
        # No GPU here, so vLLM is its stand-in (sparkstack/simulated/vllm_standin.py).
        "vllm_package": "vllm-standin==0.1.0",
        "vllm_extra_index_url": "",
        "vllm_environment": {"VLLM_STANDIN_LOAD_SECONDS": "2"},
        # The simulated Sparks never contact huggingface.co (the tests point
        # hf_endpoint at a Hub stand-in of their own where they need one).
        "fit_check_hub": False,
        "prefetch_weights": False,
        # Prisma (behind LiteLLM's request log) downloads its engines from a site these
        # machines cannot reach.
        "litellm_request_log": False,
    }
    if Path(TORCH_CPU_WHEEL).exists():
        # Open WebUI pulls in torch; the machine's CPU wheel keeps the install small.
        data["pip_find_links"].append("/opt/wheels")
        data["pip_constraints"] = ["torch==2.13.0+cpu"]
    data.update(overrides)
    return data


def write_inventory(path: str | Path, hosts: list[SimHost], group_data: dict | None = None,
                    host_data: dict[str, dict] | None = None) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    entries = []
    for h in hosts:
        data = {"ssh_hostname": h.address, "address": h.address}
        data.update((host_data or {}).get(h.name, {}))
        entries.append((h.name, data))
    group = sim_group_data(**(group_data or {}))
    path.write_text(
        "# Simulated Sparks written by `python -m sparkstack.simulated`; regenerated on each run.\n"
        f"sparks = (\n{pprint.pformat(entries, indent=4)},\n"
        f"{pprint.pformat(group, indent=4)},\n)\n"
    )
    return path
