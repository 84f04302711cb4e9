"""Will a model fit in a Spark's memory?

    sparkstack-fit MODEL_DIR_OR_REPO [--max-model-len N] [--max-num-seqs N]
                   [--gpu-memory-utilization X] [--kv-cache-dtype auto|fp8]
                   [--hub https://huggingface.co] [--json]

Weights as `fit_inputs` reads them (safetensors headers, locally or from the Hub by
range requests). KV cache per token: 2 x layers x KV heads x head dim x dtype bytes, or
for MLA models (DeepSeek) one latent of kv_lora_rank + qk_rope_head_dim per layer. vLLM
refuses to start unless one full `max_model_len` sequence fits beside the weights,
activations and its runtime overhead; the budget is gpu_memory_utilization x total
memory, and on unified memory that budget must also be free now (page cache counts as
reclaimable). The deploy runs the same estimate on the controller from the inputs
`fit_inputs` gathered on the host.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from .fit_inputs import model_inputs

GIB = 1024**3
DTYPE_BYTES = {"float32": 4, "float": 4, "bfloat16": 2, "float16": 2, "half": 2}
KV_DTYPE_BYTES = {"fp8": 1, "fp8_e4m3": 1, "fp8_e5m2": 1}
RUNTIME_OVERHEAD = 1.5 * GIB   # CUDA context, CUDA graphs, allocator slack (vLLM profiles ~1-2 GiB)
MAX_UTILIZATION = 0.95         # the most of the memory a model may be given
BATCHED_TOKENS = 8192          # vLLM's default max_num_batched_tokens with chunked prefill


def _text_config(config: dict) -> dict:
    return config.get("text_config") or config  # multimodal configs nest the LLM's


def kv_bytes_per_token(config: dict, kv_cache_dtype: str = "auto") -> int:
    c = _text_config(config)
    layers = c["num_hidden_layers"]
    if kv_cache_dtype in KV_DTYPE_BYTES:
        dtype_bytes = KV_DTYPE_BYTES[kv_cache_dtype]
    else:  # auto: the model's activation dtype
        dtype_bytes = DTYPE_BYTES.get(str(c.get("torch_dtype") or c.get("dtype")
                                          or "bfloat16"), 2)
    if c.get("kv_lora_rank"):  # MLA: one compressed latent + the rope key per layer
        return layers * (c["kv_lora_rank"] + c.get("qk_rope_head_dim", 64)) * dtype_bytes
    heads = c["num_attention_heads"]
    kv_heads = c.get("num_key_value_heads") or heads
    head_dim = c.get("head_dim") or c["hidden_size"] // heads
    return 2 * layers * kv_heads * head_dim * dtype_bytes


def activation_bytes(config: dict) -> int:
    """Peak activations of a profiling forward pass: a rough 12 hidden-sized bf16
    buffers per batched token plus the logits of one token per batched row."""
    c = _text_config(config)
    return 12 * c["hidden_size"] * BATCHED_TOKENS * 2 + c.get("vocab_size", 0) * 256 * 4


@dataclass
class Memory:
    """The machine's memory as the OS sees it (bytes)."""

    total: int
    free: int
    available: int  # free + reclaimable page cache

    @classmethod
    def from_meminfo(cls, text: str) -> "Memory":
        kb = {}
        for line in text.splitlines():
            key, _, rest = line.partition(":")
            if rest.strip():
                kb[key] = int(rest.split()[0]) * 1024
        return cls(kb["MemTotal"], kb["MemFree"], kb.get("MemAvailable", kb["MemFree"]))

    def budget(self, gpu_memory_utilization: float) -> int:
        return int(gpu_memory_utilization * self.total)

    def committed(self, held: int) -> "Memory":
        """What is left once models hold `held` bytes of budget. vLLM takes its whole
        budget at start, so on a Spark the OS figures already show a running model's
        budget as used; the cap also covers a model still loading, and (on the
        simulated Sparks) a stand-in that allocates nothing."""
        cap = max(int(MAX_UTILIZATION * self.total) - held, 0)
        return Memory(self.total, min(self.free, cap), min(self.available, cap))


@dataclass
class Estimate:
    weights_gib: float
    weights_source: str
    kv_per_token_kib: float
    kv_one_sequence_gib: float
    kv_all_sequences_gib: float
    activations_gib: float
    overhead_gib: float
    needed_gib: float            # weights + activations + overhead + one full sequence
    budget_gib: float            # gpu_memory_utilization x total
    kv_room_gib: float           # what the budget leaves for the KV cache
    concurrent_full_sequences: float
    free_now_gib: float
    available_now_gib: float     # free + reclaimable page cache
    verdict: str                 # fits | fits after dropping caches | does not fit
    reason: str


def estimate(config: dict, weights: int, weights_source: str, memory: Memory, *,
             max_model_len: int, max_num_seqs: int, gpu_memory_utilization: float,
             kv_cache_dtype: str = "auto", freed_on_restart: int = 0,
             parts: int = 1) -> Estimate:
    """`freed_on_restart`: memory held now by the unit this model replaces. `parts`:
    the GPUs a model across Sparks is split over (tensor x pipeline parallel): each
    holds its share of the weights and of every token's KV cache."""
    weights //= parts
    per_token = kv_bytes_per_token(config, kv_cache_dtype) // parts
    one_seq = per_token * max_model_len
    act = activation_bytes(config)
    needed = weights + act + RUNTIME_OVERHEAD + one_seq
    budget = gpu_memory_utilization * memory.total
    room = budget - weights - act - RUNTIME_OVERHEAD
    free = memory.free + freed_on_restart
    available = memory.available + freed_on_restart
    g = lambda b: round(b / GIB, 2)  # noqa: E731
    if needed > MAX_UTILIZATION * memory.total:
        verdict, reason = "does not fit", (
            f"needs {g(needed)} GiB (weights {g(weights)} + activations {g(act)} + "
            f"overhead {g(RUNTIME_OVERHEAD)} + one {max_model_len}-token sequence "
            f"{g(one_seq)}) but this machine has {g(memory.total)} GiB in all; choose a "
            "smaller or more quantized model")
    elif needed > budget:
        verdict, reason = "does not fit", (
            f"needs {g(needed)} GiB (weights {g(weights)} + activations {g(act)} + "
            f"overhead {g(RUNTIME_OVERHEAD)} + one {max_model_len}-token sequence "
            f"{g(one_seq)}) but gpu_memory_utilization {gpu_memory_utilization} gives "
            f"{g(budget)} GiB; lower max_model_len or raise gpu_memory_utilization")
    elif budget > available:
        verdict, reason = "does not fit", (
            f"its budget of {g(budget)} GiB is more than the {g(available)} GiB available "
            f"now ({g(free)} GiB free + page cache); other models and services hold the rest")
    elif budget > free:
        verdict, reason = "fits after dropping caches", (
            f"its budget of {g(budget)} GiB exceeds the {g(free)} GiB free, but page cache "
            f"can be dropped to reach {g(available)} GiB")
    else:
        verdict, reason = "fits", (f"needs {g(needed)} GiB of a {g(budget)} GiB budget; "
                                   f"{g(free)} GiB free")
    return Estimate(g(weights), weights_source, round(per_token / 1024, 1), g(one_seq),
                    g(one_seq * max_num_seqs), g(act), g(RUNTIME_OVERHEAD), g(needed),
                    g(budget), g(room), round(max(room, 0) / one_seq, 2), g(free),
                    g(available), verdict, reason)


def check_local(model: str, hf_home: str | None = None, hub: str | None = None,
                **kwargs) -> Estimate:
    config, weights, source = model_inputs(model, hf_home, hub)
    memory = Memory.from_meminfo(Path("/proc/meminfo").read_text())
    return estimate(config, weights, source, memory, **kwargs)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="sparkstack-fit")
    p.add_argument("model")
    p.add_argument("--max-model-len", type=int, default=32768)
    p.add_argument("--max-num-seqs", type=int, default=8)
    p.add_argument("--gpu-memory-utilization", type=float, default=0.3)
    p.add_argument("--kv-cache-dtype", default="auto")
    p.add_argument("--hub", help="read the headers from this Hub when the model is not "
                                 "on this machine (e.g. https://huggingface.co)")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    try:
        result = check_local(args.model, hub=args.hub, max_model_len=args.max_model_len,
                             max_num_seqs=args.max_num_seqs,
                             gpu_memory_utilization=args.gpu_memory_utilization,
                             kv_cache_dtype=args.kv_cache_dtype)
    except (OSError, KeyError, ValueError) as e:
        print(f"cannot estimate {args.model}: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(asdict(result), indent=2))
    else:
        for key, value in asdict(result).items():
            print(f"{key:28} {value}")
    return 0 if result.verdict != "does not fit" else 1


if __name__ == "__main__":
    sys.exit(main())
