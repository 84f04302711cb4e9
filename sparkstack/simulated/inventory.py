"""Write a pyinfra inventory for simulated Sparks.

The settings it adds are the same documented settings a user behind a firewall would
set: the machine's CA certificates, local wheel folders, a Hub mirror (`hf_endpoint`),
and which vLLM runs (engine.py): the real CPU engine with the test models, or the
stand-in as `vllm_package`. Nothing in the deploy knows it is a simulation.
"""

from __future__ import annotations

import glob
import pprint
from pathlib import Path

from . import engine
from .fleet import SSH_KEY, SimHost
from ..settings import load_defaults

TEST_MODEL = "sparkstack-test/tiny-chat"


def real_engine_models(hub: str) -> dict:
    """One test model for every local profile, on the real CPU engine."""
    model = {"name": "tiny-chat", "model": TEST_MODEL, "port": 8000, "max_model_len": 1024,
             "max_num_seqs": 4, "gpu_memory_utilization": 0.1, "tool_call_parser": "hermes",
             "extra_args": list(engine.CPU_EXTRA_ARGS)}
    local = "on this simulated Spark (a random test model: it writes nonsense)"
    return {
        "hf_endpoint": hub,
        "fit_check_hub": True,
        "prefetch_weights": True,
        # the deploy downloads the weights before a unit starts; the engine itself never
        # goes to the Hub (the stand-in serves files, not the whole Hub API)
        "vllm_environment": {"HF_HUB_OFFLINE": "1"},
        "models": [model],
        "profiles": {
            "fast": {"local": ["tiny-chat"], "cloud": "openrouter/qwen/qwen3-4b:free",
                     "title": "Fast — tiny-chat", "description": f"Quick answers {local}"},
            "expert": {"local": ["tiny-chat"], "cloud": "openrouter/qwen/qwen3-235b-a22b:free",
                       "title": "Expert — tiny-chat", "description": f"Harder questions {local}"},
            "code": {"local": ["tiny-chat"], "cloud": "openrouter/qwen/qwen3-coder:free",
                     "title": "Code — tiny-chat", "description": f"Programming {local}"},
            "cloud": {"local": [], "cloud": "openrouter/qwen/qwen3-235b-a22b:free",
                      "title": "Cloud — OpenRouter",
                      "description": "Sent to the cloud provider: prompts leave this machine"},
            # the default auto profile (its rules pick fast, expert or code)
            "auto": load_defaults()["profiles"]["auto"],
        },
    }


def sim_group_data(vllm: str = engine.STANDIN, hub: str = "", **overrides) -> dict:
    """`vllm`: engine.REAL (the CPU engine; `hub` serves its test models) or
    engine.STANDIN."""
    data = {
        "ssh_user": "root",
        "ssh_key": str(SSH_KEY),
        "ssh_known_hosts_file": "/dev/null",
        "ssh_strict_host_key_checking": "off",
        # The registries are reached through a TLS-intercepting proxy whose CA the
        # hosts must trust (exactly what extra_ca_certificates is for).
        "extra_ca_certificates": sorted(glob.glob("/usr/local/share/ca-certificates/*.crt")),
        "pip_find_links": ["/opt/sparkstack-test-wheels"],
        # The simulated Sparks never contact huggingface.co (the tests point
        # hf_endpoint at a Hub stand-in of their own where they need one).
        "fit_check_hub": False,
        "prefetch_weights": False,
        # Prisma (behind LiteLLM's request log) downloads its engines from a site these
        # machines cannot reach.
        "litellm_request_log": False,
    }
    if vllm == engine.REAL:
        data.update(engine.package_settings())
        data.update(real_engine_models(hub))
    else:  # no GPU here: vLLM is its stand-in (sparkstack/simulated/vllm_standin.py)
        data.update({"vllm_package": "vllm-standin==0.1.0", "vllm_extra_index_url": "",
                     "vllm_environment": {"VLLM_STANDIN_LOAD_SECONDS": "2"}})
    if engine.TORCH_CPU_WHEEL.exists():
        # Open WebUI pulls in torch (and so does the CPU engine): the machine's CPU
        # wheel keeps the install small.
        data["pip_find_links"].append(str(engine.TORCH_CPU_WHEEL.parent))
        data.setdefault("pip_constraints", [engine.TORCH_CPU])
    data.update(overrides)
    return data


def write_inventory(path: str | Path, hosts: list[SimHost], group_data: dict | None = None,
                    host_data: dict[str, dict] | None = None, vllm: str = engine.STANDIN,
                    hub: str = "") -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    entries = []
    for h in hosts:
        data = {"ssh_hostname": h.address, "address": h.address}
        data.update((host_data or {}).get(h.name, {}))
        entries.append((h.name, data))
    group = sim_group_data(vllm, hub, **(group_data or {}))
    path.write_text(
        "# Simulated Sparks written by `python -m sparkstack.simulated`; regenerated on each run.\n"
        f"sparks = (\n{pprint.pformat(entries, indent=4)},\n"
        f"{pprint.pformat(group, indent=4)},\n)\n"
    )
    return path
