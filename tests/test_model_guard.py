"""Only the names LiteLLM serves as such can be asked for."""

from sparkstack_host.model_guard import served

NAMES = {"fast", "code", "cloud", "claude-*"}


def test_profiles_and_aliases_are_served():
    for name in ("fast", "cloud", "claude-sonnet-4-5", "claude-opus-4"):
        assert served(name, NAMES), name


def test_a_deployments_own_model_is_not():
    for name in ("openrouter/qwen/qwen3-4b:free", "hosted_vllm/qwen3-4b", "fast-cloud-fallback",
                 "Fast", ""):
        assert not served(name, NAMES), name
