"""A Hugging Face token for gated repos: where it comes from, where it goes (root-only
files and the masked environment of the fit program), and what a gated repo without it
answers, against the Hub stand-in's gated repo."""

from __future__ import annotations

import subprocess
import sys

import pytest
from pyinfra.api import StringCommand
from sparkstack_host import download, fit_inputs
from sparkstack_host.contract import write_env_file

from sparkstack.services.vllm import download_command
from sparkstack.services.vllm.fit import ModelFitInputs
from sparkstack.settings import SettingsError, validate_inventory
from sparkstack.simulated.hub_standin import HubStandin
from tests import fit_models as fm

TOKEN = "hf_gatedAccess123"
REPO = "meta-llama/Llama-3.1-8B-Instruct"


@pytest.fixture
def gated_hub(tmp_path):
    repo = tmp_path / "hub" / REPO
    fm.write_model(repo, fm.LLAMA_31_8B, fm.dense(fm.LLAMA_31_8B))
    (repo / ".gated").write_text(TOKEN)
    with HubStandin(tmp_path / "hub") as hub:
        yield hub


def test_a_gated_repo_refuses_the_download_without_a_token_and_says_what_to_set(
        gated_hub, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    args = [REPO, "--hf-home", str(tmp_path / "hf"), "--endpoint", gated_hub.endpoint]
    assert download.main(args) == 1
    err = capsys.readouterr().err
    assert "HTTP 401 without a token" in err and "set hf_token" in err
    assert not (tmp_path / "hf" / "hub").exists()  # nothing written


def test_the_download_reads_the_token_from_a_root_only_file_never_a_command_line(
        gated_hub, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    env_file = tmp_path / "vllm.env"
    env_file.write_text(write_env_file({"VLLM_API_KEY": "k", "HF_TOKEN": TOKEN}))
    args = [REPO, "--hf-home", str(tmp_path / "hf"), "--endpoint", gated_hub.endpoint,
            "--token-from", str(env_file)]
    assert download.main(args) == 0, capsys.readouterr().err
    assert fit_inputs.find_model_dir(REPO, str(tmp_path / "hf")) is not None
    assert ".gated" not in [p.name for p in fit_inputs.find_model_dir(
        REPO, str(tmp_path / "hf")).iterdir()]


def test_the_fit_reads_a_gated_repo_with_the_token_and_names_the_gate_without(
        gated_hub, tmp_path, monkeypatch):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    state = fit_inputs.download_state(REPO, "main", str(tmp_path), gated_hub.endpoint)
    assert state["gated"] and "HTTP 401 without a token" in state["error"]
    with pytest.raises(OSError):
        fit_inputs.model_inputs(REPO, hf_home=str(tmp_path), hub=gated_hub.endpoint)
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    assert fit_inputs.download_state(REPO, "main", str(tmp_path),
                                     gated_hub.endpoint) == {"cached": False, "error": ""}
    config, weights, _ = fit_inputs.model_inputs(REPO, hf_home=str(tmp_path),
                                                 hub=gated_hub.endpoint)
    assert config["num_hidden_layers"] == fm.LLAMA_31_8B["num_hidden_layers"] and weights


def test_the_fit_program_gets_the_token_in_its_environment_masked_in_the_output(
        gated_hub, tmp_path):
    from pyinfra.api.hiddenvalue import HiddenValue
    command = ModelFitInputs().command(REPO, str(tmp_path), gated_hub.endpoint,
                                       download_from=gated_hub.endpoint,
                                       token=HiddenValue(TOKEN))
    assert isinstance(command, StringCommand)
    assert TOKEN not in str(command) and TOKEN not in repr(command)
    ran = subprocess.run(["sh", "-c", command.get_raw_value()], capture_output=True,
                         text=True, check=True)
    assert '"error": ""' in ran.stdout and '"unknown"' not in ran.stdout


def _host(tmp_path, **settings):
    secrets = tmp_path / "secrets"
    return validate_inventory({"spark1": {"secrets_dir": str(secrets), **settings}})[0]


def test_the_token_comes_from_the_setting_the_environment_or_the_secrets_folder(
        tmp_path, monkeypatch):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    assert _host(tmp_path)["hf_token"] == ""
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "hf_token").write_text(TOKEN + "\n")
    assert _host(tmp_path)["hf_token"] == TOKEN
    monkeypatch.setenv("HF_TOKEN", "hf_fromTheEnvironment")
    assert _host(tmp_path)["hf_token"] == "hf_fromTheEnvironment"
    assert _host(tmp_path, hf_token="hf_inTheInventory")["hf_token"] == "hf_inTheInventory"


def test_a_bad_token_is_refused_by_name_without_showing_it(tmp_path, monkeypatch):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    with pytest.raises(SettingsError) as err:
        _host(tmp_path, hf_token="hf_secret part")
    assert "hf_token = (hidden): must be a string without spaces" in str(err.value)
    assert "secret part" not in str(err.value)
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "hf_token").write_text("hf_two\nlines")
    with pytest.raises(SettingsError) as err:
        _host(tmp_path)
    assert f"hf_token from the file {tmp_path / 'secrets' / 'hf_token'} (hidden)" in \
        str(err.value) and "hf_two" not in str(err.value)


def test_the_deploy_downloads_as_root_reading_vllms_root_only_file(tmp_path, monkeypatch):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    s = _host(tmp_path, hf_token=TOKEN)
    command = download_command(s, s.models[0])
    assert TOKEN not in command
    assert f"--as-user {s['vllm_user']} --token-from {s.layout.secrets_env('vllm')}" in command


def _plan_fit(tmp_path, monkeypatch, download: dict):
    """The deploy's fit gate for one starting model whose inputs say `download`."""
    from sparkstack.host_facts import Snapshot
    from sparkstack.services.vllm import fit
    s = _host(tmp_path)
    meminfo = "MemTotal: 127612108 kB\nMemFree: 118489088 kB\nMemAvailable: 121634816 kB\n"
    monkeypatch.setattr(fit, "_inputs", lambda s, m: {
        "meminfo": meminfo, "download": download, "unknown": "not read in this test"})
    state = Snapshot({"files": {}, "contents": {}, "units": {}, "users": {},
                      "packages": []}, [])
    return fit.check(s, state, s.models, [])


def test_the_fit_gate_refuses_a_gated_download_naming_the_token_setting(tmp_path,
                                                                        monkeypatch):
    from pyinfra.api.exceptions import PyinfraError
    monkeypatch.delenv("HF_TOKEN", raising=False)
    with pytest.raises(PyinfraError) as err:
        _plan_fit(tmp_path, monkeypatch, {"cached": False, "gated": True,
                                          "error": "URL answered HTTP 401 without a token"})
    assert "answered HTTP 401 without a token; no host was changed. Set hf_token" in \
        str(err.value)
    plan = _plan_fit(tmp_path, monkeypatch, {"cached": False, "error": ""})
    assert plan.lines[0].startswith("fit of qwen3-4b: fits")
