"""TEST MODEL for the real vLLM engine on simulated Sparks: a tiny Qwen2-shaped causal LM
made from nothing on this machine (no model can be downloaded here).

- a byte-level BPE tokenizer trained with `tokenizers` on a fixed local text, with a
  Qwen/Hermes chat template that renders `tools`, tool calls and `tool` results, and the
  `<tool_call>`/`<tool_response>` tokens vLLM's `hermes` parser looks up at start;
- random bf16 weights from a seeded generator in one safetensors file; head size 32,
  one of those vLLM's CPU attention accepts.

The same seed gives the same bytes, so a model is built once and kept in the cache
(`build()` returns the cached folder). It writes nonsense: it is for proving the
platform around the engine, not for answers. `python -m sparkstack.simulated.test_model
DIR` builds one into DIR.
"""

from __future__ import annotations

import hashlib
import json
import random
import shutil
import struct
import sys
from array import array
from pathlib import Path

# Hidden 128, 2 layers, 4 query heads and 2 KV heads of size 32, vocabulary 1024.
SHAPE = {"hidden_size": 128, "intermediate_size": 256, "num_hidden_layers": 2,
         "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 32,
         "vocab_size": 1024, "max_position_embeddings": 32768}
TRAINED_VOCAB = 1000  # the BPE's own size; the added tokens follow, the rest is padding
SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
# Not special: they must survive decoding, the parser reads them from the text.
TOOL_TOKENS = ["<tool_call>", "</tool_call>", "<tool_response>", "</tool_response>"]

CHAT_TEMPLATE = """\
{%- set sys = messages[0].content if messages and messages[0].role == 'system' else none -%}
{%- if tools -%}
<|im_start|>system
{% if sys %}{{ sys }}

{% endif %}# Tools
You may call one or more functions. Their signatures:
<tools>
{% for tool in tools %}{{ tool | tojson }}
{% endfor %}</tools>
Answer a call as <tool_call>{"name": NAME, "arguments": ARGS}</tool_call><|im_end|>
{% elif sys -%}
<|im_start|>system
{{ sys }}<|im_end|>
{% endif -%}
{%- for message in messages -%}
{%- if message.role == 'system' -%}
{%- elif message.role == 'tool' -%}
<|im_start|>user
<tool_response>
{{ message.content }}
</tool_response><|im_end|>
{% elif message.role == 'assistant' -%}
<|im_start|>assistant
{{ message.content or '' }}
{%- for call in message.tool_calls or [] %}<tool_call>
{"name": "{{ call.function.name }}", "arguments": {{ call.function.arguments if call.function.arguments is string else call.function.arguments | tojson }}}
</tool_call>{% endfor %}<|im_end|>
{% else -%}
<|im_start|>{{ message.role }}
{{ message.content }}<|im_end|>
{% endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}
<|im_start|>assistant
{% endif -%}
"""

WORDS = ("the model answers a question about code data spark memory token route profile "
         "fast expert cloud local request stream tool call function arguments result "
         "python json list dict string number true false null weather city time search "
         "read write file open close error retry health ready drain swap update deploy "
         "def return import class self async await print value key name type object").split()


def corpus(seed: int, lines: int = 3000) -> list[str]:
    """A fixed text with the shapes the model will see: prose, JSON, chat markers."""
    rng = random.Random(seed)
    syllables = [a + b for a in "bdfgklmnprstvz" for b in "aeiou"]
    words = WORDS + ["".join(rng.choices(syllables, k=rng.randint(2, 4))) for _ in range(400)]
    out = []
    for i in range(lines):
        text = " ".join(rng.choice(words) for _ in range(rng.randint(4, 14)))
        if i % 3 == 0:
            out.append(json.dumps({"name": rng.choice(WORDS),
                                   "arguments": {rng.choice(WORDS): text}}))
        else:
            out.append(text.capitalize() + rng.choice(".?!:"))
    return out


def tokenizer_json(seed: int) -> str:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=TRAINED_VOCAB, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus(seed), trainer=trainer)
    tok.add_special_tokens(SPECIAL)
    tok.add_tokens(TOOL_TOKENS)
    return tok.to_str(pretty=True)


def _bf16(values: list[float]) -> bytes:
    """float32 -> bfloat16 by keeping each value's upper half (little-endian)."""
    raw = array("f", values).tobytes()
    out = bytearray(len(raw) // 2)
    out[0::2], out[1::2] = raw[2::4], raw[3::4]
    return bytes(out)


def tensors(seed: int) -> dict[str, tuple[list[int], bytes]]:
    s = SHAPE
    h, i, hd = s["hidden_size"], s["intermediate_size"], s["head_dim"]
    q, kv = s["num_attention_heads"] * hd, s["num_key_value_heads"] * hd
    rng = random.Random(seed)

    def normal(*shape: int) -> tuple[list[int], bytes]:
        n = 1
        for d in shape:
            n *= d
        return list(shape), _bf16([rng.gauss(0.0, 0.02) for _ in range(n)])

    def ones(n: int) -> tuple[list[int], bytes]:
        return [n], _bf16([1.0] * n)

    out = {"model.embed_tokens.weight": normal(s["vocab_size"], h),
           "model.norm.weight": ones(h)}
    for layer in range(s["num_hidden_layers"]):
        p = f"model.layers.{layer}."
        out.update({
            p + "input_layernorm.weight": ones(h),
            p + "post_attention_layernorm.weight": ones(h),
            p + "self_attn.q_proj.weight": normal(q, h), p + "self_attn.q_proj.bias": normal(q),
            p + "self_attn.k_proj.weight": normal(kv, h), p + "self_attn.k_proj.bias": normal(kv),
            p + "self_attn.v_proj.weight": normal(kv, h), p + "self_attn.v_proj.bias": normal(kv),
            p + "self_attn.o_proj.weight": normal(h, q),
            p + "mlp.gate_proj.weight": normal(i, h), p + "mlp.up_proj.weight": normal(i, h),
            p + "mlp.down_proj.weight": normal(h, i),
        })
    return out


def safetensors_bytes(named: dict[str, tuple[list[int], bytes]]) -> bytes:
    """The safetensors layout: 8-byte header length, JSON header, the tensors' bytes."""
    header, offset = {"__metadata__": {"format": "pt"}}, 0
    for name in sorted(named):
        shape, data = named[name]
        header[name] = {"dtype": "BF16", "shape": shape,
                        "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # the data starts 8-byte aligned
    return struct.pack("<Q", len(text)) + text + b"".join(named[n][1] for n in sorted(named))


def files(seed: int) -> dict[str, bytes]:
    s = SHAPE
    vocab = json.loads(tokenizer_json(seed))
    ids = {t["content"]: t["id"] for t in vocab["added_tokens"]}
    config = {"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2",
              **s, "hidden_act": "silu", "rms_norm_eps": 1e-6, "rope_theta": 10000.0,
              "tie_word_embeddings": True, "torch_dtype": "bfloat16", "use_cache": True,
              "bos_token_id": ids["<|endoftext|>"], "eos_token_id": ids["<|im_end|>"]}
    tokenizer_config = {
        "tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": 32768,
        "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>", "bos_token": None,
        "unk_token": None, "chat_template": CHAT_TEMPLATE,
        "added_tokens_decoder": {str(t["id"]): {k: t[k] for k in (
            "content", "lstrip", "rstrip", "normalized", "single_word", "special")}
            for t in vocab["added_tokens"]}}
    generation = {"bos_token_id": config["bos_token_id"],
                  "eos_token_id": [ids["<|im_end|>"], ids["<|endoftext|>"]]}

    def as_json(value) -> bytes:
        return (json.dumps(value, indent=1, sort_keys=True) + "\n").encode()

    return {"config.json": as_json(config),
            "generation_config.json": as_json(generation),
            "tokenizer.json": json.dumps(vocab, indent=1).encode(),
            "tokenizer_config.json": as_json(tokenizer_config),
            "model.safetensors": safetensors_bytes(tensors(seed))}


def build(dest: Path, seed: int = 0) -> Path:
    """Write the model into `dest` unless a build of the same seed is already there."""
    stamp = dest.with_name(f".{dest.name}.built")  # beside it: the Hub lists every file
    recipe = hashlib.sha1(Path(__file__).read_bytes()).hexdigest()  # this very code
    want = f"seed={seed} recipe={recipe}\n"
    if dest.is_dir() and stamp.exists() and stamp.read_text() == want:
        return dest
    tmp = dest.with_name(dest.name + ".build")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for name, data in files(seed).items():
        (tmp / name).write_bytes(data)
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)
    stamp.write_text(want)
    return dest


if __name__ == "__main__":
    print(build(Path(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 0))
