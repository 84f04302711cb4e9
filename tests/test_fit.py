"""Memory-fit estimator on real model architectures (headers only, see fit_models)."""

import json

import pytest
from sparkstack_host import fit, fit_inputs

from tests import fit_models as fm

GB = 1e9

# Published checkpoint sizes (bytes of tensor data, decimal GB as the Hub shows them).
CASES = [
    ("llama-3.1-8b bf16", fm.LLAMA_31_8B, lambda c: fm.dense(c), 16.06 * GB),
    ("qwen2.5-7b bf16", fm.QWEN25_7B, lambda c: fm.dense(c), 15.23 * GB),
    ("qwen2.5-7b awq", fm.QWEN25_7B, lambda c: fm.dense(c, "awq"), 5.58 * GB),
    ("qwen3-30b-a3b bf16 (MoE)", fm.QWEN3_30B_A3B, lambda c: fm.qwen3_moe(c), 61.07 * GB),
    ("qwen3-30b-a3b fp8 (MoE)", fm.QWEN3_30B_A3B, lambda c: fm.qwen3_moe(c, "fp8"),
     31.2 * GB),
    ("deepseek-v2-lite bf16 (MLA)", fm.DEEPSEEK_V2_LITE, fm.deepseek_v2, 31.4 * GB),
    ("llama-3.1-8b nvfp4", fm.LLAMA_31_8B, lambda c: fm.dense(c, "nvfp4"), 6.03 * GB),
]


@pytest.mark.parametrize("label,config,build,published", CASES, ids=[c[0] for c in CASES])
def test_weights_from_headers_match_published_sizes(tmp_path, label, config, build,
                                                    published):
    fm.write_model(tmp_path, config, build(config))
    weights, source = fit_inputs.weights_bytes(tmp_path)
    assert source == "4 safetensors header(s)"
    assert weights == pytest.approx(published, rel=0.05), label


def test_index_total_size_is_used_when_present(tmp_path):
    total = fm.write_model(tmp_path, fm.LLAMA_31_8B, fm.dense(fm.LLAMA_31_8B),
                           with_index=True)
    assert fit_inputs.weights_bytes(tmp_path) == (total, "model.safetensors.index.json")


def test_kv_cache_per_token():
    assert fit.kv_bytes_per_token(fm.LLAMA_31_8B) == 128 * 1024          # 2*32*8*128*2
    assert fit.kv_bytes_per_token(fm.LLAMA_31_8B, "fp8") == 64 * 1024
    assert fit.kv_bytes_per_token(fm.QWEN3_30B_A3B) == 96 * 1024         # 2*48*4*128*2
    # MLA keeps one latent (512) + rope key (64) per layer, not K and V per head
    assert fit.kv_bytes_per_token(fm.DEEPSEEK_V2_LITE) == 27 * 576 * 2
    nested = {"text_config": fm.LLAMA_31_8B}
    assert fit.kv_bytes_per_token(nested) == 128 * 1024


MEMINFO_GB10 = """MemTotal:       127600000 kB
MemFree:         40000000 kB
MemAvailable:   110000000 kB
Cached:          70000000 kB
"""


def _estimate(gmu, max_model_len=32768, meminfo=MEMINFO_GB10, **kw):
    config = fm.LLAMA_31_8B
    return fit.estimate(config, int(16.06 * GB), "test", fit.Memory.from_meminfo(meminfo),
                        max_model_len=max_model_len, max_num_seqs=8,
                        gpu_memory_utilization=gmu, **kw)


def test_verdicts():
    fits = _estimate(0.25)        # 30.4 GiB budget, 38 GiB free
    assert fits.verdict == "fits"
    assert fits.kv_one_sequence_gib == 4.0                    # 32768 x 128 KiB
    assert fits.concurrent_full_sequences > 1
    after_drop = _estimate(0.5)    # 60.8 GiB budget > 38 GiB free, < 105 GiB available
    assert after_drop.verdict == "fits after dropping caches"
    too_big = _estimate(0.95)      # 115.6 GiB budget > 104.9 GiB available
    assert too_big.verdict == "does not fit"
    assert "available now" in too_big.reason
    budget_short = _estimate(0.12, max_model_len=131072)  # weights + one 16 GiB sequence
    assert budget_short.verdict == "does not fit"
    assert "lower max_model_len or raise gpu_memory_utilization" in budget_short.reason


def test_memory_of_the_unit_being_replaced_counts_as_free():
    assert _estimate(0.95, freed_on_restart=20 * 1024**3).verdict == \
        "fits after dropping caches"


def test_command_reads_a_local_model_folder(tmp_path, capsys):
    fm.write_model(tmp_path / "m", fm.QWEN3_30B_A3B, fm.qwen3_moe(fm.QWEN3_30B_A3B))
    rc = fit.main([str(tmp_path / "m"), "--gpu-memory-utilization", "0.01", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert rc == 1 and out["verdict"] == "does not fit"
    assert out["weights_gib"] == pytest.approx(56.9, abs=0.1)


def test_hugging_face_cache_layout(tmp_path):
    snap = tmp_path / "hub" / "models--meta-llama--Llama-3.1-8B" / "snapshots" / "abc123"
    fm.write_model(snap, fm.LLAMA_31_8B, fm.dense(fm.LLAMA_31_8B))
    assert fit_inputs.find_model_dir("meta-llama/Llama-3.1-8B", str(tmp_path)) == snap
    assert fit_inputs.find_model_dir("meta-llama/Other", str(tmp_path)) is None


def _hub_repo(root, repo, with_index, pad=8 * 1024 * 1024):
    """A Hub repo of header-only shards, each padded as if it carried its tensors."""
    folder = root / repo
    total = fm.write_model(folder, fm.QWEN3_30B_A3B, fm.qwen3_moe(fm.QWEN3_30B_A3B),
                           with_index=with_index)
    for shard in folder.glob("*.safetensors"):
        with open(shard, "ab") as f:
            f.write(b"\0" * pad)
    return total


@pytest.mark.parametrize("with_index", [True, False])
def test_weights_of_a_hub_model_come_from_range_requests(tmp_path, with_index):
    from sparkstack.simulated.hub_standin import HubStandin
    total = _hub_repo(tmp_path, "Qwen/Qwen3-30B-A3B", with_index)
    with HubStandin(tmp_path) as hub:
        config, weights, source = fit_inputs.model_inputs(
            "Qwen/Qwen3-30B-A3B", hf_home=str(tmp_path / "hf"), hub=hub.endpoint)
    assert weights == total and config["num_experts"] == 128
    if with_index:
        assert source == "model.safetensors.index.json on the Hub"
    else:
        assert source == "4 safetensors header(s) read from the Hub by range"
        assert any(p.startswith("/api/models/") for p in hub.requests)
    assert hub.bytes_sent < 4 * 1024 * 1024  # headers only; the shards hold 32 MiB more


def test_a_model_neither_here_nor_on_the_hub_is_named_with_the_reason(tmp_path):
    from sparkstack.simulated.hub_standin import HubStandin
    with HubStandin(tmp_path) as hub, pytest.raises(FileNotFoundError) as err:
        fit_inputs.model_inputs("nobody/nothing", hf_home=str(tmp_path), hub=hub.endpoint)
    assert "nobody/nothing: not readable from the Hub at http://127.0.0.1:" in str(err.value)
    with pytest.raises(FileNotFoundError, match=r"\(Hub lookups are off\)"):
        fit_inputs.model_inputs("nobody/nothing", hf_home=str(tmp_path), hub=None)


def test_the_deploy_gathers_fit_inputs_by_running_the_whole_module_as_itself(tmp_path):
    """The fact's command is what runs on a host with nothing of sparkstack installed:
    the module's own text on python3's stdin, its own entry point, stdlib only."""
    import subprocess

    from sparkstack.services.vllm.fit import ModelFitInputs
    total = fm.write_model(tmp_path / "m", fm.LLAMA_31_8B, fm.dense(fm.LLAMA_31_8B))
    command = ModelFitInputs().command(model=str(tmp_path / "m"), hf_home=str(tmp_path),
                                       hub=None)
    # a bare interpreter: no site-packages, not started from the repository
    command = command.replace("python3 - ", "python3 -I -S - ", 1)
    out = subprocess.run(["sh", "-c", command], capture_output=True, text=True,
                         cwd="/", check=True).stdout
    got = ModelFitInputs().process(out.splitlines())
    assert got["weights"] == total and got["config"]["num_hidden_layers"] == 32
    assert got["meminfo"].startswith("MemTotal:")
    missing = subprocess.run(["sh", "-c", command.replace(str(tmp_path / "m"), "/nope")],
                             capture_output=True, text=True, cwd="/", check=True).stdout
    got = ModelFitInputs().process(missing.splitlines())
    assert got["unknown"] == ("FileNotFoundError: /nope: not a local folder and not in "
                              "the Hugging Face cache (Hub lookups are off)")
    assert got["meminfo"].startswith("MemTotal:") and "config" not in got


def test_budgets_held_by_running_models_cap_what_is_left():
    """vLLM takes its whole budget at start: a loading model (or a stand-in that
    allocates nothing) still holds it."""
    memory = fit.Memory(total=100 * GIB, free=90 * GIB, available=95 * GIB)
    held = memory.committed(memory.budget(0.5))
    assert (held.free, held.available) == (45 * GIB, 45 * GIB)   # 95 % of 100 GiB - 50
    assert memory.committed(0) == fit.Memory(100 * GIB, 90 * GIB, 95 * GIB)
    tight = fit.Memory(total=100 * GIB, free=10 * GIB, available=20 * GIB).committed(
        memory.budget(0.5))
    assert (tight.free, tight.available) == (10 * GIB, 20 * GIB)  # the OS knows better


GIB = 1024**3


def test_a_model_across_sparks_needs_its_share_on_each():
    """Split over two Sparks (tensor x pipeline parallel 2), each holds half the weights
    and half of every token's KV cache: what one Spark refuses, two take."""
    alone = _estimate(0.16, max_model_len=131072)   # needs 33.3 GiB of a 19.5 GiB budget
    half = _estimate(0.16, max_model_len=131072, parts=2)             # needs 17.9 GiB
    assert alone.verdict == "does not fit" and half.verdict == "fits"
    assert half.weights_gib == round(alone.weights_gib / 2, 2)
    assert half.kv_one_sequence_gib == alone.kv_one_sequence_gib / 2
