"""`sparkstack claude-env`: the shell exports that point Claude Code at a Spark's
LiteLLM, its model slots mapped to profiles by the `claude_code_models` setting."""

from __future__ import annotations

import shlex

from .host_shell import inventory_hosts
from .logins import reach, secrets_of
from .settings import served_by_litellm, validate_inventory

QUIET = {"DISABLE_TELEMETRY": "1", "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
         "DISABLE_AUTOUPDATER": "1"}
SLOTS = {"model": "ANTHROPIC_MODEL", "opus": "ANTHROPIC_DEFAULT_OPUS_MODEL",
         "sonnet": "ANTHROPIC_DEFAULT_SONNET_MODEL", "haiku": "ANTHROPIC_DEFAULT_HAIKU_MODEL"}


def routed_name(s, slot: str) -> str:
    """The model name for a Claude Code slot: a profile, or a name an alias routes."""
    name = s["claude_code_models"].get(slot)
    if not served_by_litellm(s, name):
        raise RuntimeError(f"host {s.name}: claude_code_models.{slot} = {name!r}: must be "
                           f"a profile ({', '.join(s['profiles'])}) or a name an alias "
                           "routes (e.g. claude-sonnet-4-5)")
    return name


def exports(inventory_path: str, host_name: str | None = None) -> str:
    hosts = inventory_hosts(inventory_path)
    settings = {s.name: s for s in validate_inventory(
        {h.name: h.data.dict() for h in hosts})}
    candidates = [s for s in settings.values() if s.has("litellm")
                  and (host_name is None or s.name == host_name)]
    if not candidates:
        raise RuntimeError(f"no host {'named ' + host_name + ' ' if host_name else ''}"
                           "runs LiteLLM in this inventory")
    s = candidates[0]
    key = secrets_of(s)["litellm_master_key"]
    where, tunnel = reach(s, s["litellm_bind_address"], s["litellm_port"])
    lines = [f"# LiteLLM listens on loopback on {s.name}: first {tunnel}"] if tunnel else []
    lines += ["unset ANTHROPIC_API_KEY  # it would take precedence over the token",
              f"export ANTHROPIC_BASE_URL={shlex.quote(f'http://{where}')}",
              f"export ANTHROPIC_AUTH_TOKEN={shlex.quote(key)}"]
    for slot, variable in SLOTS.items():
        lines.append(f"export {variable}={shlex.quote(routed_name(s, slot))}")
    lines += [f"export {k}={v}" for k, v in QUIET.items()]
    return "\n".join(lines)
