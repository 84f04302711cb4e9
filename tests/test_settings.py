"""Inventory validation: every kind of bad input gives one error naming the host, the
setting, the value and what is accepted."""

import pytest

from sparkstack.settings import SettingsError, load_defaults, validate_inventory


def problems(datas: dict) -> list[str]:
    with pytest.raises(SettingsError) as err:
        validate_inventory(datas)
    return err.value.problems


def one_problem(datas: dict) -> str:
    found = problems(datas)
    assert len(found) == 1, found
    return found[0]


def test_defaults_are_valid_and_every_key_is_documented():
    hosts = validate_inventory({"spark-1.lan": {"ssh_user": "ops"}})
    assert hosts[0].roles == ["postgres", "vllm", "litellm", "openwebui"]
    assert [m["name"] for m in hosts[0].models] == ["qwen3-4b", "qwen3-coder-30b"]
    text = open(load_defaults.__globals__["DEFAULTS_FILE"]).read()
    for key in load_defaults():
        line = next(l for l in text.splitlines() if l.startswith(f"{key}:"))
        assert "#" in line, f"{key} has no one-line comment"


def test_model_entries_get_model_defaults():
    model = validate_inventory({"s": {}})[0].models[0]
    assert model["max_num_seqs"] == 8 and model["kv_cache_dtype"] == "auto"


def test_unknown_key():
    msg = one_problem({"spark-1": {"vllm_pakage": "vllm==0.33.0"}})
    assert "unknown setting vllm_pakage = 'vllm==0.33.0'" in msg
    assert "vllm_package" in msg  # suggests the near miss


def test_wrong_type():
    msg = one_problem({"spark-1": {"litellm_port": "4000"}})
    assert msg == "host spark-1: litellm_port = '4000': must be a port from 1 to 65535"


def test_port_clash_between_models():
    models = [{"name": "a", "model": "org/a", "port": 8000},
              {"name": "b", "model": "org/b", "port": 8000}]
    msg = one_problem({"spark-1": {"models": models,
                                   "profiles": {"fast": {"local": ["a", "b"]}}}})
    assert "models[1].port (b) = 8000: clashes with models[0].port (a) = 8000" in msg


def test_port_clash_with_a_service():
    msg = one_problem({"spark-1": {"openwebui_port": 8001}})
    assert "clashes with openwebui_port = 8001" in msg


def test_port_out_of_range():
    models = [{"name": "a", "model": "org/a", "port": 70000}]
    msg = one_problem({"s": {"models": models, "profiles": {"p": {"local": ["a"]}}}})
    assert "models[0] (a).port = 70000: must be a port from 1 to 65535" in msg


def test_model_without_served_name():
    models = [{"model": "org/a", "port": 8000}]
    msg = one_problem({"s": {"models": models, "profiles": {"p": {"cloud": "x/y"}}}})
    assert msg == ("host s: models[0].name: missing; every model needs a served name, a "
                   "model (a Hugging Face repo id or a local folder) and a port")


def test_model_with_unknown_key_and_bad_values():
    models = [{"name": "a", "model": "org/a", "port": 8000, "max_len": 4096,
               "gpu_memory_utilization": 1.2, "kv_cache_dtype": "int4"}]
    found = problems({"s": {"models": models, "profiles": {"p": {"local": ["a"]}}}})
    assert any("models[0] (a).max_len = 4096: unknown model setting" in p for p in found)
    assert any("gpu_memory_utilization = 1.2: must be above 0 and at most 0.95" in p
               for p in found)
    assert any("kv_cache_dtype = 'int4': must be one of auto, fp8" in p for p in found)


def test_profile_naming_a_model_that_does_not_exist():
    msg = one_problem({"s": {"profiles": {"fast": {"local": ["qwen3-40b"]}},
                             "litellm_model_aliases": {}}})
    assert msg.startswith("host s: profiles.fast.local = ['qwen3-40b']: no host in the "
                          "inventory serves a model or swap group named 'qwen3-40b'")
    assert "served: qwen3-4b, qwen3-coder-30b" in msg


def test_swap_groups_are_checked():
    models = [{"name": "day", "model": "a/b", "port": 8000, "swap_group": "big"},
              {"name": "night", "model": "a/c", "port": 8001, "swap_group": "big"}]
    host = validate_inventory({"s": {"models": models, "profiles": {
        "code": {"local": ["big"]}}, "litellm_model_aliases": {}}})[0]
    assert [m["swap_group"] for m in host.models] == ["big", "big"]
    msg = one_problem({"s": {"models": [{**models[0], "swap_group": "day"}, models[1]],
                             "profiles": {"code": {"local": ["day"]}},
                             "litellm_model_aliases": {}}})
    assert msg == ("host s: models[0].swap_group = 'day': is also a served name on this "
                   "host; profiles could not tell them apart")
    msg = one_problem({"s": {"models": [{**models[0], "swap_group": "big group"}],
                             "profiles": {"code": {"local": ["day"]}},
                             "litellm_model_aliases": {}}})
    assert msg.startswith("host s: models[0] (day).swap_group = 'big group': must be a "
                          "swap group name")


def test_profile_can_name_a_model_served_by_another_host():
    hosts = validate_inventory({
        "front": {"roles": ["postgres", "litellm"],
                  "profiles": {"big": {"local": ["llama-70b"]}},
                  "litellm_model_aliases": {}},
        "back": {"roles": ["vllm"],
                 "models": [{"name": "llama-70b", "model": "org/l", "port": 8000}]},
    })
    assert [h.name for h in hosts] == ["front", "back"]


def test_alias_to_missing_profile():
    msg = one_problem({"s": {"litellm_model_aliases": {"claude-*": "coding"}}})
    assert "litellm_model_aliases.claude-* = 'coding': no such profile" in msg


def test_malformed_host_entries():
    assert "host 'spark 1': not a valid host name" in one_problem({"spark 1": {}})
    msg = one_problem({"s": {"models": ["qwen3-4b"]}})
    assert "models = ['qwen3-4b']: item 0 = 'qwen3-4b': must be a mapping" in msg


def test_roles():
    msg = one_problem({"s": {"roles": ["vllm", "webui"]}})
    assert msg == ("host s: roles = ['vllm', 'webui']: item 1 = 'webui': must be one of "
                   "postgres, vllm, litellm, openwebui")
    msg = one_problem({"s": {"roles": ["vllm", "litellm"]}})
    assert "litellm keeps its data in the local PostgreSQL" in msg


def test_missing_ca_file():
    msg = one_problem({"s": {"extra_ca_certificates": ["/nonexistent/corp.crt"]}})
    assert "extra_ca_certificates item '/nonexistent/corp.crt': no such file" in msg


def test_pyinfra_connection_keys_are_not_settings():
    s = validate_inventory({"s": {"ssh_user": "ops", "ssh_port": 2222, "_sudo": True}})[0]
    assert not {"ssh_user", "ssh_port", "_sudo"} & set(s.values)
    assert s["litellm_port"] == 4000  # and the settings are the defaults


def test_problems_on_several_hosts_are_reported_together():
    found = problems({"a": {"litellm_port": "x"}, "b": {"nope": 1}})
    assert [p.split(":")[0] for p in found] == ["host a", "host b"]


def test_a_claude_code_slot_set_to_a_model_litellm_does_not_serve_is_refused():
    found = problems({"s": {"claude_code_models": {"model": "nonexistent", "opus": "expert",
                                                   "sonnet": "claude-sonnet-4-5",
                                                   "haiku": "fast"}}})
    assert found == ["host s: claude_code_models.model = 'nonexistent': LiteLLM serves no "
                     "such model; give a profile (fast, expert, code, cloud, auto) or a name an "
                     "alias routes (e.g. claude-sonnet-4-5)"]


def test_a_ca_file_that_is_not_a_certificate_is_refused(tmp_path):
    not_a_cert = tmp_path / "hostname"
    not_a_cert.write_text("spark-1\n")
    msg = one_problem({"s": {"extra_ca_certificates": [str(not_a_cert)]}})
    assert f"extra_ca_certificates item '{not_a_cert}': holds no PEM certificate" in msg


def test_a_package_folder_over_plain_http_needs_its_host_trusted():
    msg = one_problem({"s": {"pip_find_links": ["http://mirror.lan/wheels/"]}})
    assert ("'http://mirror.lan/wheels/' is served over plain HTTP, which pip ignores "
            "unless its host is trusted: add 'mirror.lan' to pip_trusted_hosts") in msg
    s = validate_inventory({"s": {"pip_find_links": ["http://mirror.lan/wheels/"],
                                  "pip_trusted_hosts": ["mirror.lan"]}})[0]
    from sparkstack.render import pip_conf
    assert "trusted-host = mirror.lan" in pip_conf(s).splitlines()
