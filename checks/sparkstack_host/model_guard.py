"""LiteLLM callback (set in its config): a client may ask only for a model name LiteLLM
serves as such (a profile, an alias, a wildcard such as claude-*). LiteLLM's router
would also take a deployment's own model (`openrouter/...`) by name, which would let a
client send prompts to the cloud around its profile. Runs in LiteLLM's process."""

from __future__ import annotations

from fnmatch import fnmatchcase


def served(name: str, model_names: set[str]) -> bool:
    return name in model_names or any(
        "*" in pattern and fnmatchcase(name, pattern) for pattern in model_names)


def _make_guard():
    from fastapi import HTTPException
    from litellm.integrations.custom_logger import CustomLogger

    class ModelGuard(CustomLogger):
        async def async_pre_call_hook(self, user_api_key_dict, cache, data, call_type):
            from litellm.proxy import proxy_server
            model = (data or {}).get("model")
            router = proxy_server.llm_router
            if not model or router is None:
                return data
            names = {d["model_name"] for d in router.get_model_list()}
            if not served(str(model), names):
                raise HTTPException(status_code=400, detail=(
                    f"model {model!r} is not served here; ask for one of: "
                    + ", ".join(sorted(n for n in names if "*" not in n))))
            return data

    return ModelGuard()


try:
    guard = _make_guard()
except ImportError:  # imported without LiteLLM (the host venv, tests): only `served`
    guard = None
