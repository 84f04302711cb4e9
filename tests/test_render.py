"""Rendering: vLLM command lines and units, LiteLLM's config, pip settings."""

import shlex

import yaml

from sparkstack.fleet import Fleet
from sparkstack.render import pip_conf, template
from sparkstack.services.litellm import routes_plan
from sparkstack.services.vllm import UNIT_TEMPLATE, unit_context, vllm_args
from sparkstack.settings import validate_inventory

MODEL = {"name": "coder", "model": "Qwen/Qwen3-Coder-30B-A3B-Instruct-FP8", "port": 8001,
         "max_model_len": 65536, "gpu_memory_utilization": 0.45, "max_num_seqs": 4,
         "kv_cache_dtype": "fp8", "quantization": "fp8", "tool_call_parser": "qwen3_coder",
         "reasoning_parser": "qwen3", "extra_args": ["--enforce-eager"]}


def fleet_of(datas):
    return Fleet(validate_inventory(datas))


def litellm_config(s, fleet):
    """LiteLLM's config once every model is ready."""
    return routes_plan(s, fleet).config


def test_vllm_args_carry_every_model_flag():
    host = validate_inventory({"s": {"models": [MODEL],
                                     "profiles": {"code": {"local": ["coder"]}}}})[0]
    args = vllm_args(host.models[0], "127.0.0.1", 600)
    line = " ".join(args)
    assert args[:2] == ["serve", "Qwen/Qwen3-Coder-30B-A3B-Instruct-FP8"]
    for flag in ("--served-model-name coder", "--host 127.0.0.1", "--port 8001",
                 "--max-model-len 65536", "--gpu-memory-utilization 0.45",
                 "--max-num-seqs 4", "--kv-cache-dtype fp8", "--quantization fp8",
                 "--enable-auto-tool-choice --tool-call-parser qwen3_coder",
                 "--reasoning-parser qwen3", "--enable-prefix-caching"):
        assert flag in line
    assert args[-1] == "--enforce-eager"
    assert "--api-key" not in line  # the key comes from the root-only env file


def vllm_unit_text(host, model) -> str:
    return template(UNIT_TEMPLATE, s=host, layout=host.layout, venv="/opt/v",
                    state_dir="/var/lib/sparkstack/vllm",
                    secrets_env="/etc/sparkstack/vllm/secrets.env",
                    wait_ready="/opt/sparkstack/host/venv/bin/sparkstack-wait-ready",
                    **unit_context(host, model, "127.0.0.1", Fleet([host])))


def test_vllm_unit_has_gb10_environment_and_long_start_timeout():
    host = validate_inventory({"s": {"vllm_environment": {"VLLM_LOGGING_LEVEL": "DEBUG"}}})[0]
    unit = vllm_unit_text(host, host.models[0])
    assert "Environment=TORCH_CUDA_ARCH_LIST=12.1a" in unit
    assert "Environment=TRITON_PTXAS_PATH=/usr/local/cuda/bin/ptxas" in unit
    assert 'Environment="VLLM_LOGGING_LEVEL=DEBUG"' in unit
    assert "Environment=HF_HOME=/var/lib/sparkstack/vllm/cache/huggingface" in unit
    assert "TimeoutStartSec=1830" in unit
    assert "User=vllm" in unit
    exec_line = next(l for l in unit.splitlines() if l.startswith("ExecStart="))
    assert shlex.split(exec_line.split("=", 1)[1])[1:4] == [
        "serve", "Qwen/Qwen3-4B-Instruct-2507", "--served-model-name"]


def test_vllm_unit_gives_the_engine_what_it_needs_under_the_sandbox():
    """What the real engine was seen to need: the whole of /proc, netlink for gloo,
    libzmq's and the thread binding's system calls, its open-files limit, an orderly
    stop that lets requests under way finish, and its own address for its processes."""
    host = validate_inventory({"s": {}})[0]
    unit = vllm_unit_text(host, host.models[0])
    lines = unit.splitlines()
    assert "ProcSubset=all" in lines
    assert "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK" in lines
    assert "SystemCallFilter=~@privileged @resources" in lines
    allowed = next(l for l in lines if l.startswith("SystemCallFilter=sched_"))
    assert "sched_setscheduler" in allowed.split("=", 1)[1].split()
    assert "LimitNOFILE=65535" in lines and "KillMode=mixed" in lines
    assert "Environment=VLLM_HOST_IP=127.0.0.1" in lines
    assert "Environment=TORCHINDUCTOR_CACHE_DIR=/var/lib/sparkstack/vllm/cache/torchinductor" \
        in lines
    exec_line = next(l for l in lines if l.startswith("ExecStart="))
    assert '"--shutdown-timeout" "600"' in exec_line
    # every other unit keeps the tight defaults
    litellm = template("base/sandbox.j2", writable=["/x"], devices=[], jit=False)
    assert "ProcSubset=pid" in litellm and "AF_NETLINK" not in litellm
    assert "SystemCallFilter=sched" not in litellm


def test_litellm_config_profiles_aliases_and_fallbacks():
    fleet = fleet_of({"s": {"cloud_api_key": "sk-or-cloud-secret"}})
    config = litellm_config(fleet["s"], fleet)
    by_name = {}
    for entry in config["model_list"]:
        by_name.setdefault(entry["model_name"], []).append(entry["litellm_params"])
    assert by_name["fast"] == [{"model": "hosted_vllm/qwen3-4b",
                                "api_base": "http://127.0.0.1:8000/v1",
                                "api_key": "os.environ/VLLM_API_KEY", "order": 1},
                               {"model": "openrouter/qwen/qwen3-4b:free",
                                "api_base": "https://openrouter.ai/api/v1",
                                "api_key": "os.environ/CLOUD_API_KEY", "order": 2}]
    assert by_name["claude-*"][0]["model"] == "hosted_vllm/qwen3-coder-30b"
    assert by_name["claude-*"][1]["model"] == "openrouter/qwen/qwen3-coder:free"
    assert by_name["cloud"] == [{"model": "openrouter/qwen/qwen3-235b-a22b:free",
                                 "api_base": "https://openrouter.ai/api/v1",
                                 "api_key": "os.environ/CLOUD_API_KEY", "order": 1}]
    assert set(by_name) == {"fast", "expert", "code", "cloud", "auto", "claude-*"}
    assert config["router_settings"]["enable_pre_call_checks"] is True
    assert config["general_settings"]["master_key"] == "os.environ/LITELLM_MASTER_KEY"
    assert "sk-or-cloud-secret" not in yaml.safe_dump(config)  # secrets stay references


def test_without_a_cloud_key_there_are_no_cloud_routes(monkeypatch):
    monkeypatch.delenv("OPENROUTER_API_KEY", raising=False)
    fleet = fleet_of({"s": {}})
    config = litellm_config(fleet["s"], fleet)
    names = {e["model_name"] for e in config["model_list"]}
    assert names == {"fast", "expert", "code", "auto", "claude-*"}
    assert all(e["litellm_params"]["model"].startswith("hosted_vllm/")
               for e in config["model_list"])


def test_cloud_key_from_the_controller_environment(monkeypatch):
    monkeypatch.setenv("OPENROUTER_API_KEY", "from-env")
    fleet = fleet_of({"s": {}})
    assert "cloud" in {e["model_name"] for e in litellm_config(fleet["s"], fleet)["model_list"]}


def test_same_model_on_two_hosts_is_load_balanced_and_remote_vllm_binds_its_address():
    model = [{"name": "qwen3-4b", "model": "Qwen/Qwen3-4B-Instruct-2507", "port": 8000}]
    fleet = fleet_of({"a": {"address": "10.0.0.1"},
                      "b": {"address": "10.0.0.2", "roles": ["vllm"], "models": model}})
    config = litellm_config(fleet["a"], fleet)
    bases = [e["litellm_params"]["api_base"] for e in config["model_list"]
             if e["model_name"] == "fast"]
    assert bases == ["http://127.0.0.1:8000/v1", "http://10.0.0.2:8000/v1"]
    assert fleet.vllm_bind_address(fleet["b"]) == "10.0.0.2"
    assert fleet.vllm_bind_address(fleet["a"]) == "127.0.0.1"


def test_pip_conf_carries_index_proxy_and_ca_settings(tmp_path):
    ca = tmp_path / "corp.crt"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    host = validate_inventory({"s": {
        "pip_index_url": "https://mirror.lan/simple", "https_proxy": "http://proxy:3128",
        "extra_ca_certificates": [str(ca)], "pip_find_links": ["/srv/wheels"]}})[0]
    conf = pip_conf(host)
    assert "index-url = https://mirror.lan/simple" in conf
    assert "proxy = http://proxy:3128" in conf
    assert "cert = /etc/ssl/certs/ca-certificates.crt" in conf
    assert "find-links = /srv/wheels" in conf


def test_with_two_full_sparks_each_litellm_reaches_every_vllm_at_its_fleet_address():
    # b's LiteLLM routes to a's models, so a's vLLM binds a's address, not loopback,
    # and a's own LiteLLM must use that address too
    fleet = fleet_of({"a": {"address": "10.0.0.1"}, "b": {"address": "10.0.0.2"}})
    assert fleet.vllm_bind_address(fleet["a"]) == "10.0.0.1"
    config = litellm_config(fleet["a"], fleet)
    bases = [e["litellm_params"]["api_base"] for e in config["model_list"]
             if e["model_name"] == "fast"]
    assert bases == ["http://10.0.0.1:8000/v1", "http://10.0.0.2:8000/v1"]
