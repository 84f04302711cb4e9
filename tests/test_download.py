"""Downloading a model into a Hugging Face cache from the Hub stand-in: the layout vLLM
finds, progress, resuming an interrupted download, a missing repo."""

import httpx
import pytest
from sparkstack_host import download, fit_inputs

from sparkstack.simulated.hub_standin import HubStandin, commit_of
from tests import fit_models as fm


@pytest.fixture
def hub(tmp_path):
    repo = tmp_path / "hub" / "Qwen" / "Qwen3-0.6B"
    fm.write_model(repo, fm.LLAMA_31_8B, fm.dense(fm.LLAMA_31_8B), shards=2)
    (repo / "README.md").write_text("not needed by vLLM")
    with open(repo / "model-00001-of-00002.safetensors", "ab") as f:
        f.write(b"\1" * 3 * 1024 * 1024)  # as if it carried its tensors
    with HubStandin(tmp_path / "hub") as h:
        yield h, repo


def test_download_lands_where_huggingface_hub_looks_with_progress(hub, tmp_path):
    h, repo = hub
    lines = []
    folder = download.download("Qwen/Qwen3-0.6B", "main", str(tmp_path / "hf"), h.endpoint,
                               out=lambda line, flush=False: lines.append(line))
    cache = tmp_path / "hf" / "hub" / "models--Qwen--Qwen3-0.6B"
    assert folder == cache / "snapshots" / commit_of("Qwen/Qwen3-0.6B")
    assert (cache / "refs" / "main").read_text() == commit_of("Qwen/Qwen3-0.6B")
    assert sorted(p.name for p in folder.iterdir()) == [
        "config.json", "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors"]
    for p in folder.iterdir():
        assert p.read_bytes() == (repo / p.name).read_bytes()
    assert lines[0].startswith("download: Qwen/Qwen3-0.6B@main")
    assert "3 files" in lines[0] and "0.0 MiB already here" in lines[0]
    assert lines[-1].startswith("download: all files: ") and "(100%)" in lines[-1]
    # the fit check (and vLLM) now find the model in the cache
    assert fit_inputs.find_model_dir("Qwen/Qwen3-0.6B", str(tmp_path / "hf")) == folder


def test_an_interrupted_download_resumes_where_it_stopped(hub, tmp_path):
    h, repo = hub
    shard = "model-00001-of-00002.safetensors"
    whole = (repo / shard).read_bytes()
    snap = (tmp_path / "hf" / "hub" / "models--Qwen--Qwen3-0.6B" / "snapshots"
            / commit_of("Qwen/Qwen3-0.6B"))
    snap.mkdir(parents=True)
    (snap / f"{shard}.incomplete").write_bytes(whole[:1000])
    sent_before = h.bytes_sent
    download.download("Qwen/Qwen3-0.6B", "main", str(tmp_path / "hf"), h.endpoint,
                      out=lambda *a, **k: None)
    assert (snap / shard).read_bytes() == whole
    assert not (snap / f"{shard}.incomplete").exists()
    # the first 1000 bytes were not sent again
    fetched = sum((repo / n).stat().st_size for n in (
        "config.json", "model-00002-of-00002.safetensors"))
    assert h.bytes_sent - sent_before < fetched + len(whole) - 1000 + 4096
    # a second run finds everything in place and fetches no file
    requests = len(h.requests)
    download.download("Qwen/Qwen3-0.6B", "main", str(tmp_path / "hf"), h.endpoint,
                      out=lambda *a, **k: None)
    assert [p for p in h.requests[requests:] if "/resolve/" in p] == []


def test_a_missing_repo_fails_and_leaves_the_cache_alone(hub, tmp_path):
    h, _ = hub
    with pytest.raises(httpx.HTTPStatusError):
        download.download("nobody/nothing", "main", str(tmp_path / "hf"), h.endpoint,
                          out=lambda *a, **k: None)
    assert not (tmp_path / "hf").exists()


def test_the_deploy_can_tell_before_any_change_whether_a_download_will_work(tmp_path):
    from sparkstack_host.fit_inputs import download_state
    repo = tmp_path / "hub" / "org" / "m"
    repo.mkdir(parents=True)
    (repo / "config.json").write_text("{}")
    with HubStandin(tmp_path / "hub") as hub:
        assert download_state("org/m", "main", str(tmp_path / "hf"), hub.endpoint) == {
            "cached": False, "error": ""}
        missing = download_state("org/other", "main", str(tmp_path / "hf"), hub.endpoint)
        assert missing["error"].endswith("answered HTTP 404")
    offline = download_state("org/m", "main", str(tmp_path / "hf"), "http://127.0.0.1:9")
    assert "/api/models/org/m/revision/main" in offline["error"]
    # in the cache already: nothing to reach
    cache = tmp_path / "hf" / "hub" / "models--org--m"
    (cache / "refs").mkdir(parents=True)
    (cache / "refs" / "main").write_text("abc")
    (cache / "snapshots" / "abc").mkdir(parents=True)
    (cache / "snapshots" / "abc" / "config.json").write_text("{}")
    assert download_state("org/m", "main", str(tmp_path / "hf"), "http://127.0.0.1:9") == {
        "cached": True, "error": ""}
