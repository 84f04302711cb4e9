"""The memory-fit gate: refuse, at plan time, models that will not fit, before any host
is changed, so a running model is never stopped for one that cannot start.

Each model that starts is estimated from its config.json and safetensors headers
(gathered on the host by `sparkstack_host.fit_inputs`, run as itself) against the memory
left: what the OS reports, capped by what the budgets of the models that run hold
(`Memory.committed`). Models a swap replaces give their budgets back first; whether the
new ones also fit while the old ones still run decides make-before-break.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from pyinfra import host
from pyinfra.api import FactBase, QuoteString, StringCommand
from pyinfra.api.hiddenvalue import HiddenValue
from pyinfra.api.exceptions import PyinfraError
from sparkstack_host import fit_inputs
from sparkstack_host.contract import LITELLM_PROCESS_GIB, Manifest, vllm_unit
from sparkstack_host.fit import Memory, estimate

from ...host_facts import Snapshot, module_command
from ...settings import HostSettings

MAKE_BEFORE_BREAK = "make-before-break"
BREAK_BEFORE_MAKE = "break-before-make"


class ModelFitInputs(FactBase):
    """config.json, weight bytes and /proc/meminfo for one model, read on the host by
    `sparkstack_host.fit_inputs` run as itself with the host's python3 (nothing of
    sparkstack needs to be installed there yet)."""

    def command(self, model: str, hf_home: str, hub: str | None,
                download_from: str | None = None, revision: str = "main",
                token: HiddenValue | None = None) -> str | StringCommand:
        args = ["--model", model, "--hf-home", hf_home] + (["--hub", hub] if hub else [])
        if download_from:
            args += ["--download-from", download_from, "--revision", revision]
        command = module_command(fit_inputs, args)
        if not token:
            return command
        # A first deploy has no root-only file on the host to read it from yet: the
        # token rides in the program's environment, masked in pyinfra's output.
        return StringCommand("HF_TOKEN=", QuoteString(token), " ", command, _separator="")

    def process(self, output):
        return json.loads("\n".join(output))


@dataclass
class FitPlan:
    mode: str                        # MAKE_BEFORE_BREAK or BREAK_BEFORE_MAKE
    drop_caches: bool = False
    lines: list[str] = field(default_factory=list)   # each model's verdict, for the output


def held_budgets(s: HostSettings, state: Snapshot, total: int) -> dict[str, int]:
    """Budget held by each running vLLM unit, as the last deploy's manifest records it."""
    try:
        recorded = Manifest.from_json(state.content(s.layout.manifest) or "")
    except (ValueError, KeyError, TypeError):  # no manifest yet, or an older schema
        return {}
    return {m.unit: int(m.gpu_memory_utilization * total) for m in recorded.models
            if state.running(m.unit)}


def frontdoor_bytes(s: HostSettings) -> int:
    """What the host's LiteLLM processes hold, kept from the models' memory."""
    if not s.has("litellm"):
        return 0
    return int(s["litellm_processes"] * LITELLM_PROCESS_GIB * 1024**3)


def needs_download(s: HostSettings, model: dict) -> bool:
    """The deploy downloads the weights itself before the unit starts."""
    return s["prefetch_weights"] and not model["model"].startswith("/")


def _inputs(s: HostSettings, model: dict) -> dict:
    return host.get_fact(ModelFitInputs, model=model["model"],
                         hf_home=s.layout.cache_dir("vllm", "huggingface"),
                         hub=s["hf_endpoint"] if s["fit_check_hub"] else None,
                         download_from=s["hf_endpoint"] if needs_download(s, model) else None,
                         revision=model["revision"] or "main",
                         token=HiddenValue(s["hf_token"]) if s["hf_token"] else None)


def refuse_download(s: HostSettings, model: dict, error: str,
                    gated: bool = False) -> PyinfraError:
    if gated:
        return PyinfraError(
            f"host {s.name}: model {model['name']} ({model['model']}) is to be downloaded "
            f"before it starts, but {error}; no host was changed. Set hf_token (or export "
            "HF_TOKEN on the controller, or put it in the file hf_token in secrets_dir) to "
            "a token whose account was granted access to the repo on the Hub.")
    return PyinfraError(
        f"host {s.name}: model {model['name']} ({model['model']}@"
        f"{model['revision'] or 'main'}) is to be downloaded before it starts, but the "
        f"Spark cannot reach it at hf_endpoint ({error}); no host was changed. Point "
        "hf_endpoint at a mirror the Spark reaches, put the model in the host's Hugging "
        f"Face cache ({s.layout.cache_dir('vllm', 'huggingface')}) or give a local folder "
        "as its `model`, or set prefetch_weights: false (vLLM then downloads it when it "
        "starts).")


def parts(model: dict) -> int:
    """How many GPUs (one per Spark) the model is split over."""
    c = model.get("cluster") or {}
    return c.get("tensor_parallel_size", 1) * c.get("pipeline_parallel_size", 1)


def _judge(inputs: dict, model: dict, memory: Memory) -> tuple[str, str, object]:
    """Verdict and reason for one model in `memory`; from its budget alone when its
    weights could not be read."""
    if "unknown" not in inputs:
        e = estimate(inputs["config"], inputs["weights"], inputs["source"], memory,
                     max_model_len=model["max_model_len"], max_num_seqs=model["max_num_seqs"],
                     gpu_memory_utilization=model["gpu_memory_utilization"],
                     kv_cache_dtype=model["kv_cache_dtype"], parts=parts(model))
        return e.verdict, e.reason, e
    budget = memory.budget(model["gpu_memory_utilization"])
    g = lambda b: round(b / 1024**3, 2)  # noqa: E731
    note = f"weights not checked ({inputs['unknown']})"
    if budget > memory.available:
        return "does not fit", (f"its budget of {g(budget)} GiB is more than the "
                                f"{g(memory.available)} GiB left; {note}"), None
    if budget > memory.free:
        return "fits after dropping caches", (f"its budget of {g(budget)} GiB exceeds the "
                                              f"{g(memory.free)} GiB free; {note}"), None
    return "fits", f"its budget of {g(budget)} GiB is free; {note}", None


def check(s: HostSettings, state: Snapshot, starting: list[dict],
          replaced: list[str]) -> FitPlan:
    """Fit of the models in `starting` once the running units in `replaced` have stopped
    (raises, before any change, when one does not fit), and whether they also fit
    while those still run (make-before-break)."""
    plan = FitPlan(BREAK_BEFORE_MAKE)
    if not starting:
        return plan
    inputs = {m["name"]: _inputs(s, m) for m in starting}
    for m in starting:
        download = inputs[m["name"]].get("download", {})
        if download.get("error"):
            raise refuse_download(s, m, download["error"], download.get("gated", False))
    memory = Memory.from_meminfo(next(iter(inputs.values()))["meminfo"])
    # the LiteLLM processes' memory is not the models' to take
    held = {**held_budgets(s, state, memory.total), "litellm": frontdoor_bytes(s)}
    replaced_in_place = any(vllm_unit(m["name"]) in replaced for m in starting)
    after = sum(held.values()) - sum(held.get(u, 0) for u in replaced)  # old ones stopped
    alongside = sum(held.values())                                     # old ones running
    mbb = not replaced_in_place
    for m in starting:
        verdict, reason, result = _judge(inputs[m["name"]], m, memory.committed(after))
        share = f" (this Spark's 1/{parts(m)} share)" if parts(m) > 1 else ""
        plan.lines.append(f"fit of {m['name']}{share}: {verdict} ({reason})")
        if verdict == "does not fit" and not m["skip_fit_check"]:
            raise refuse(s.name, m, reason, result)
        plan.drop_caches |= verdict == "fits after dropping caches"
        if mbb:
            mbb = _judge(inputs[m["name"]], m, memory.committed(alongside))[0] == "fits"
        budget = memory.budget(m["gpu_memory_utilization"])
        after += budget
        alongside += budget
    if held["litellm"]:
        plan.lines.append(f"fit counts {s['litellm_processes']} LiteLLM process(es): "
                          f"{held['litellm'] / 1024**3:.1f} GiB kept from the models")
    if mbb and replaced:
        plan.mode = MAKE_BEFORE_BREAK
    return plan


def refuse(host_name: str, model: dict, reason: str, result) -> PyinfraError:
    figures = "" if result is None else (
        f" Figures in GiB: weights {result.weights_gib}, KV cache per sequence "
        f"{result.kv_one_sequence_gib}, activations {result.activations_gib}, overhead "
        f"{result.overhead_gib}, budget {result.budget_gib}, free now "
        f"{result.free_now_gib}, available after dropping caches "
        f"{result.available_now_gib}.")
    return PyinfraError(
        f"host {host_name}: model {model['name']} ({model['model']}) does not fit, "
        f"no host was changed: {reason}.{figures} If you know better, set "
        f"skip_fit_check: true on this model entry.")
