"""Small safetensors files whose headers describe real models' big tensors.

Each builder lists a published architecture's tensors (names, shapes, dtypes of the
real checkpoints) and writes only the header, so a 60 GB model is a few kilobytes here.
"""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path

DTYPE_BYTES = {"BF16": 2, "F16": 2, "F32": 4, "I32": 4, "U8": 1, "F8_E4M3": 1}


def write_safetensors(path: Path, tensors: dict[str, tuple[str, list[int]]]) -> int:
    header, offset = {}, 0
    for name, (dtype, shape) in tensors.items():
        size = math.prod(shape) * DTYPE_BYTES[dtype]
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    blob = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(blob)) + blob)  # header only, no tensor data
    return offset


def linear(t: dict, name: str, out: int, inp: int, quant: str, bias: bool = False) -> None:
    """One linear layer as the checkpoint format stores it."""
    if quant == "bf16":
        t[f"{name}.weight"] = ("BF16", [out, inp])
    elif quant == "fp8":  # block-wise FP8 with fp32 scales per 128x128 block
        t[f"{name}.weight"] = ("F8_E4M3", [out, inp])
        t[f"{name}.weight_scale_inv"] = ("F32", [math.ceil(out / 128), math.ceil(inp / 128)])
    elif quant == "awq":  # 4-bit packed 8 per int32, group size 128
        t[f"{name}.qweight"] = ("I32", [inp, out // 8])
        t[f"{name}.qzeros"] = ("I32", [inp // 128, out // 8])
        t[f"{name}.scales"] = ("F16", [inp // 128, out])
    elif quant == "nvfp4":  # 4-bit packed 2 per byte, an FP8 scale per 16 values
        t[f"{name}.weight"] = ("U8", [out, inp // 2])
        t[f"{name}.weight_scale"] = ("F8_E4M3", [out, inp // 16])
        t[f"{name}.weight_scale_2"] = ("F32", [1])
        t[f"{name}.input_scale"] = ("F32", [1])
    if bias:
        t[f"{name}.bias"] = ("BF16" if quant != "awq" else "F16", [out])


def dense(cfg: dict, quant: str = "bf16") -> dict:
    t: dict = {}
    h, heads, kv = cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_key_value_heads"]
    hd = cfg.get("head_dim") or h // heads
    emb = "F16" if quant == "awq" else "BF16"
    t["model.embed_tokens.weight"] = (emb, [cfg["vocab_size"], h])
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}"
        bias = cfg.get("attention_bias", False) or cfg.get("model_type") == "qwen2"
        linear(t, f"{p}.self_attn.q_proj", heads * hd, h, quant, bias)
        linear(t, f"{p}.self_attn.k_proj", kv * hd, h, quant, bias)
        linear(t, f"{p}.self_attn.v_proj", kv * hd, h, quant, bias)
        linear(t, f"{p}.self_attn.o_proj", h, heads * hd, quant)
        _mlp(t, f"{p}.mlp", h, cfg["intermediate_size"], quant)
        t[f"{p}.input_layernorm.weight"] = (emb, [h])
        t[f"{p}.post_attention_layernorm.weight"] = (emb, [h])
    t["model.norm.weight"] = (emb, [h])
    if not cfg.get("tie_word_embeddings"):
        t["lm_head.weight"] = (emb, [cfg["vocab_size"], h])
    return t


def _mlp(t: dict, p: str, h: int, inter: int, quant: str) -> None:
    linear(t, f"{p}.gate_proj", inter, h, quant)
    linear(t, f"{p}.up_proj", inter, h, quant)
    linear(t, f"{p}.down_proj", h, inter, quant)


def qwen3_moe(cfg: dict, quant: str = "bf16") -> dict:
    t: dict = {}
    h, heads, kv, hd = (cfg["hidden_size"], cfg["num_attention_heads"],
                        cfg["num_key_value_heads"], cfg["head_dim"])
    t["model.embed_tokens.weight"] = ("BF16", [cfg["vocab_size"], h])
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}"
        linear(t, f"{p}.self_attn.q_proj", heads * hd, h, quant)
        linear(t, f"{p}.self_attn.k_proj", kv * hd, h, quant)
        linear(t, f"{p}.self_attn.v_proj", kv * hd, h, quant)
        linear(t, f"{p}.self_attn.o_proj", h, heads * hd, quant)
        t[f"{p}.self_attn.q_norm.weight"] = ("BF16", [hd])
        t[f"{p}.self_attn.k_norm.weight"] = ("BF16", [hd])
        t[f"{p}.mlp.gate.weight"] = ("BF16", [cfg["num_experts"], h])  # router stays bf16
        for e in range(cfg["num_experts"]):
            _mlp(t, f"{p}.mlp.experts.{e}", h, cfg["moe_intermediate_size"], quant)
        t[f"{p}.input_layernorm.weight"] = ("BF16", [h])
        t[f"{p}.post_attention_layernorm.weight"] = ("BF16", [h])
    t["model.norm.weight"] = ("BF16", [h])
    t["lm_head.weight"] = ("BF16", [cfg["vocab_size"], h])
    return t


def deepseek_v2(cfg: dict) -> dict:
    """MLA attention (one latent KV per layer) and DeepSeekMoE, bf16."""
    t: dict = {}
    h, heads = cfg["hidden_size"], cfg["num_attention_heads"]
    nope, rope, v = cfg["qk_nope_head_dim"], cfg["qk_rope_head_dim"], cfg["v_head_dim"]
    lora = cfg["kv_lora_rank"]
    t["model.embed_tokens.weight"] = ("BF16", [cfg["vocab_size"], h])
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}"
        linear(t, f"{p}.self_attn.q_proj", heads * (nope + rope), h, "bf16")
        linear(t, f"{p}.self_attn.kv_a_proj_with_mqa", lora + rope, h, "bf16")
        t[f"{p}.self_attn.kv_a_layernorm.weight"] = ("BF16", [lora])
        linear(t, f"{p}.self_attn.kv_b_proj", heads * (nope + v), lora, "bf16")
        linear(t, f"{p}.self_attn.o_proj", h, heads * v, "bf16")
        if i < cfg["first_k_dense_replace"]:
            _mlp(t, f"{p}.mlp", h, cfg["intermediate_size"], "bf16")
        else:
            moe = cfg["moe_intermediate_size"]
            for e in range(cfg["n_routed_experts"]):
                _mlp(t, f"{p}.mlp.experts.{e}", h, moe, "bf16")
            _mlp(t, f"{p}.mlp.shared_experts", h, moe * cfg["n_shared_experts"], "bf16")
            t[f"{p}.mlp.gate.weight"] = ("BF16", [cfg["n_routed_experts"], h])
        t[f"{p}.input_layernorm.weight"] = ("BF16", [h])
        t[f"{p}.post_attention_layernorm.weight"] = ("BF16", [h])
    t["model.norm.weight"] = ("BF16", [h])
    t["lm_head.weight"] = ("BF16", [cfg["vocab_size"], h])
    return t


# config.json values of the published checkpoints
LLAMA_31_8B = {"model_type": "llama", "hidden_size": 4096, "num_hidden_layers": 32,
               "num_attention_heads": 32, "num_key_value_heads": 8,
               "intermediate_size": 14336, "vocab_size": 128256,
               "tie_word_embeddings": False, "torch_dtype": "bfloat16"}
QWEN25_7B = {"model_type": "qwen2", "hidden_size": 3584, "num_hidden_layers": 28,
             "num_attention_heads": 28, "num_key_value_heads": 4,
             "intermediate_size": 18944, "vocab_size": 152064,
             "tie_word_embeddings": False, "torch_dtype": "bfloat16"}
QWEN3_30B_A3B = {"model_type": "qwen3_moe", "hidden_size": 2048, "num_hidden_layers": 48,
                 "num_attention_heads": 32, "num_key_value_heads": 4, "head_dim": 128,
                 "num_experts": 128, "moe_intermediate_size": 768, "vocab_size": 151936,
                 "tie_word_embeddings": False, "torch_dtype": "bfloat16"}
DEEPSEEK_V2_LITE = {"model_type": "deepseek_v2", "hidden_size": 2048,
                    "num_hidden_layers": 27, "num_attention_heads": 16,
                    "num_key_value_heads": 16, "kv_lora_rank": 512, "q_lora_rank": None,
                    "qk_nope_head_dim": 128, "qk_rope_head_dim": 64, "v_head_dim": 128,
                    "intermediate_size": 10944, "moe_intermediate_size": 1408,
                    "n_routed_experts": 64, "n_shared_experts": 2,
                    "first_k_dense_replace": 1, "vocab_size": 102400,
                    "torch_dtype": "bfloat16"}


def write_model(folder: Path, config: dict, tensors: dict, shards: int = 4,
                with_index: bool = False) -> int:
    """Write config.json and the tensors split over `shards` header-only files."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config))
    names = list(tensors)
    per = math.ceil(len(names) / shards)
    total, weight_map = 0, {}
    for s in range(shards):
        part = {n: tensors[n] for n in names[s * per:(s + 1) * per]}
        fname = f"model-{s + 1:05d}-of-{shards:05d}.safetensors"
        total += write_safetensors(folder / fname, part)
        weight_map.update({n: fname for n in part})
    if with_index:
        (folder / "model.safetensors.index.json").write_text(json.dumps(
            {"metadata": {"total_size": total}, "weight_map": weight_map}))
    return total
