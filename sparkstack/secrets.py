"""Passwords and keys generated on the first deploy and kept stable afterwards.

They live on the controller in `secrets_dir` (mode 0700, files 0600, git-ignored), one
file per host plus one for the fleet (the vLLM API key every LiteLLM host needs). The
deploy writes them to the hosts only inside root-owned 0600 files and never into a
command line, so they appear neither in pyinfra's output nor in world-readable files.
"""

from __future__ import annotations

import json
import os
import secrets as _random
from pathlib import Path

from .settings import resolve_controller_path

HOST_SECRETS = {
    "postgres_litellm_password": lambda: _random.token_urlsafe(24),
    "postgres_openwebui_password": lambda: _random.token_urlsafe(24),
    "litellm_master_key": lambda: "sk-" + _random.token_urlsafe(32),  # LiteLLM wants sk-
    "litellm_salt_key": lambda: "sk-" + _random.token_urlsafe(32),
    "litellm_ui_password": lambda: _random.token_urlsafe(18),
    "openwebui_secret_key": lambda: _random.token_urlsafe(32),
    "openwebui_admin_password": lambda: _random.token_urlsafe(18),
}
FLEET_SECRETS = {
    "vllm_api_key": lambda: "vllm-" + _random.token_urlsafe(32),
}


def _load_or_create(path: Path, wanted: dict) -> dict[str, str]:
    path.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700)
    values = json.loads(path.read_text()) if path.exists() else {}
    missing = [k for k in wanted if k not in values]
    if missing:
        for key in missing:
            values[key] = wanted[key]()
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(values, f, indent=1, sort_keys=True)
        os.replace(tmp, path)
    return values


def host_secrets(secrets_dir: str, host_name: str) -> dict[str, str]:
    root = resolve_controller_path(secrets_dir)
    values = _load_or_create(root / "hosts" / f"{host_name}.json", HOST_SECRETS)
    values.update(_load_or_create(root / "fleet.json", FLEET_SECRETS))
    return values

