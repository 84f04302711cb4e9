"""Every setting has a rule that refuses a wrong type and a wrong value, and no value
can carry a control character (so none can add a line to a unit or config file)."""

import pytest

from sparkstack.rules import MODEL_RULES, RULES
from sparkstack.settings import SettingsError, load_defaults, validate_inventory

DEFAULTS = load_defaults()
MODEL_DEFAULTS = {**DEFAULTS["model_defaults"],
                  **{k: v for k, v in DEFAULTS["models"][0].items()}}
PROFILES = {"p": {"cloud": "openrouter/x"}}


def wrong_type(default):
    """A value of another type than the default's."""
    if isinstance(default, bool):
        return "yes"
    if isinstance(default, (int, float)):
        return str(default)
    if isinstance(default, str):
        return 8
    return "x" if isinstance(default, (list, dict)) else []


def refused(data: dict) -> list[str]:
    with pytest.raises(SettingsError) as err:
        validate_inventory({"s": data})
    return err.value.problems


def test_every_setting_of_defaults_yaml_has_a_rule():
    assert set(RULES) == set(DEFAULTS)
    assert set(MODEL_RULES) == set(MODEL_DEFAULTS)


def assert_rule_refuses_both(key: str, rule, default) -> None:
    """The rule takes its own default and refuses a wrong type and a wrong value."""
    assert rule.check(default) is None, f"{key}: its own default is refused"
    assert rule.check(wrong_type(default)) is not None, f"{key} takes a wrong type"
    assert rule.check(rule.bad) is not None, f"{key} takes {rule.bad!r}"
    if not isinstance(default, bool):  # true/false has no wrong value of its type
        assert isinstance(rule.bad, type(default)), f"{key}: give a wrong value, not type"


@pytest.mark.parametrize("key", sorted(DEFAULTS))
def test_each_setting_refuses_a_wrong_type_and_a_wrong_value(key):
    rule, default = RULES[key], DEFAULTS[key]
    assert_rule_refuses_both(key, rule, default)
    for bad in (wrong_type(default), rule.bad):
        found = refused({key: bad, "profiles": PROFILES, "litellm_model_aliases": {},
                         "models": []} if key not in ("profiles", "models",
                                                      "litellm_model_aliases") else
                        {key: bad})
        assert any(key in p for p in found), (key, bad, found)


@pytest.mark.parametrize("key", sorted(MODEL_DEFAULTS))
def test_each_model_setting_refuses_a_wrong_type_and_a_wrong_value(key):
    rule, default = MODEL_RULES[key], MODEL_DEFAULTS[key]
    assert_rule_refuses_both(key, rule, default)
    for bad in (wrong_type(default), rule.bad):
        entry = {"name": "m", "model": "org/m", "port": 8000, key: bad}
        found = refused({"models": [entry], "profiles": {"p": {"local": ["m"]}},
                         "litellm_model_aliases": {}})
        assert any(f".{key} = " in p for p in found), (key, bad, found)


@pytest.mark.parametrize("key", sorted(k for k, v in DEFAULTS.items() if isinstance(v, str)))
def test_no_setting_can_add_a_line_to_a_unit(key):
    found = refused({key: "ok\nExecStartPre=/bin/sh -c 'id'", "profiles": PROFILES,
                     "litellm_model_aliases": {}, "models": []})
    assert any(f"{key} = " in p and ("control character" in p or "must be" in p)
               for p in found), found


def test_control_characters_are_refused_deep_inside_values():
    found = refused({"models": [{"name": "m", "model": "org/m", "port": 8000,
                                 "extra_args": ["--enforce-eager\nExecStart=/bin/sh"]}],
                     "profiles": {"p": {"local": ["m"]}}, "litellm_model_aliases": {}})
    assert found == ["host s: models[0] (m).extra_args = ['--enforce-eager\\nExecStart=/bin/"
                     "sh']: holds a control character (at [0]); a newline would add a "
                     "line, and so a directive, to a unit or config file"]
    found = refused({"vllm_environment": {"A": "1\r\nB=2"}, "profiles": PROFILES,
                     "litellm_model_aliases": {}, "models": []})
    assert "holds a control character (at .A)" in found[0]


@pytest.mark.parametrize("data,expected", [
    ({"litellm_bind_address": "localhost:4000"}, "must be an IP address"),
    ({"install_root": "opt/sparkstack"}, "must be an absolute path"),
    ({"https_proxy": "proxy.lan:3128"}, "http:// or https:// URL"),
    ({"vllm_environment": {"MY VAR": "1"}}, "an environment variable name"),
    ({"vllm_package": ""}, "a pip requirement"),
    ({"litellm_version": "latest"}, "a release number"),
    ({"openwebui_bind_address": "all"}, "must be an IP address"),
])
def test_the_mistakes_seen_in_the_field_are_refused_with_what_is_accepted(data, expected):
    found = refused({**data, "profiles": PROFILES, "litellm_model_aliases": {}, "models": []})
    assert len(found) == 1 and expected in found[0], found


def test_a_tool_call_parser_is_one_vllm_knows():
    found = refused({"models": [{"name": "m", "model": "org/m", "port": 8000,
                                 "tool_call_parser": "qwen3"}],
                     "profiles": {"p": {"local": ["m"]}}, "litellm_model_aliases": {}})
    assert "tool_call_parser = 'qwen3': must be one of deepseek_v3" in found[0]
    assert "qwen3_coder" in found[0] and "qwen3_xml" in found[0]


@pytest.mark.parametrize("requirement", [
    "vllm==0.33.0", "vllm[flashinfer]>=0.33,<0.34",
    "https://example.org/vllm-0.33.0+cu130-cp38-abi3-manylinux_2_28_aarch64.whl",
    "vllm @ https://example.org/vllm-0.33.0+cu130-cp38-abi3-manylinux_2_28_aarch64.whl",
    "vllm[audio] @ file:///srv/wheels/vllm-0.33.0-cp38-abi3-linux_aarch64.whl"])
def test_every_form_of_requirement_pip_documents_is_a_vllm_package(requirement):
    assert RULES["vllm_package"].check(requirement) is None


@pytest.mark.parametrize("requirement", ["vllm @ ", "vllm @ ftp://host/v.whl",
                                         "vllm @ https://host/v.whl ; rm -rf /"])
def test_a_direct_reference_without_a_usable_url_is_refused(requirement):
    assert "direct reference" in RULES["vllm_package"].check(requirement)


@pytest.mark.parametrize("defaults, expected", [
    ({"revision": "main\n"}, "revision = 'main\\n': holds a control character"),
    ({"max_num_seqs": 0}, "max_num_seqs = 0: must be a whole number from 1 to 4096"),
    ({"colour": "red"}, "colour: unknown model setting; accepted: "),
    ({"port": 8000}, "port: unknown model setting"),
])
def test_model_defaults_are_judged_once_by_their_own_rules(defaults, expected):
    found = refused({"model_defaults": defaults, "profiles": PROFILES,
                     "litellm_model_aliases": {}, "models": []})
    assert len(found) == 1 and expected in found[0], found
