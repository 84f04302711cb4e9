"""Simulated Sparks keep the venvs their first deploys built, for hosts booted later:
complete venvs only, each once, as hard links that outlive the host's disk."""

from pathlib import Path

import pytest

from sparkstack.simulated import fleet
from sparkstack.simulated.fleet import SimHost

ROOT = "opt/sparkstack"


@pytest.fixture
def sims(tmp_path, monkeypatch):
    monkeypatch.setattr(fleet, "STATE", tmp_path / "state")
    monkeypatch.setattr(fleet, "VENV_LAYERS", tmp_path / "layers")
    return tmp_path


def built(host: str, service: str, digest: str, complete: bool = True) -> Path:
    """A venv the host's deploy wrote into its disk's upper layer."""
    venv = fleet._host_dir(host) / "upper" / ROOT / service / "venvs" / digest
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "tool").write_text(f"{service} {digest}\n")
    if complete:
        (venv / fleet.VENV_STAMP).write_text(f"{digest}\n")
    return venv


def host(name: str) -> SimHost:
    return SimHost(name=name, address="10.213.77.99", pid=0)


def test_complete_venvs_are_kept_once_as_hard_links(sims):
    litellm = built("spark1", "litellm", "aaaa")
    built("spark1", "vllm", "bbbb", complete=False)   # an interrupted build
    built("spark2", "litellm", "aaaa")                # the same venv on another host
    assert fleet.keep_venvs([host("spark1"), host("spark2")]) == 1
    [layer] = fleet._venv_layers()
    kept = layer / ROOT / "litellm" / "venvs" / "aaaa"
    assert (kept / "bin" / "tool").read_text() == "litellm aaaa\n"
    assert (kept / "bin" / "tool").stat().st_ino == (litellm / "bin" / "tool").stat().st_ino
    assert not (layer / ROOT / "vllm").exists()
    # the host's disk goes; what was kept stays
    fleet.shutil.rmtree(fleet._host_dir("spark1"))
    assert (kept / "bin" / "tool").read_text() == "litellm aaaa\n"


def test_a_later_deploy_adds_a_layer_with_only_what_is_new(sims):
    built("spark1", "litellm", "aaaa")
    fleet.keep_venvs([host("spark1")])
    built("spark3", "litellm", "aaaa")
    built("spark3", "openwebui", "cccc")
    assert fleet.keep_venvs([host("spark3")]) == 1
    newest, oldest = fleet._venv_layers()
    assert [p.name for p in (newest / ROOT).iterdir()] == ["openwebui"]
    assert [p.name for p in (oldest / ROOT).iterdir()] == ["litellm"]
    assert fleet.keep_venvs([host("spark3")]) == 0   # nothing new: no empty layer
    assert len(fleet._venv_layers()) == 2


def test_past_the_limit_the_oldest_layers_go(sims, monkeypatch):
    monkeypatch.setattr(fleet, "MAX_VENV_LAYERS", 2)
    for digest in ("d1", "d2", "d3"):
        built(f"spark-{digest}", "vllm", digest)
        fleet.keep_venvs([host(f"spark-{digest}")])
    fleet._prune_venv_layers()
    kept = {p.name for layer in fleet._venv_layers()
            for p in (layer / ROOT / "vllm" / "venvs").iterdir()}
    assert kept == {"d2", "d3"}
