"""`sparkstack logins`: the web logins the deploy made on each Spark (Open WebUI's
admin, LiteLLM's UI), with where to open them. The passwords are generated on the first
deploy and kept in `secrets_dir` on this controller; this prints them on request only."""

from __future__ import annotations

import json

from .host_shell import inventory_hosts
from .settings import HostSettings, resolve_controller_path, validate_inventory


def reach(s: HostSettings, bind: str, port: int) -> tuple[str, str]:
    """Where this controller reaches a service bound to `bind`:`port` on `s`, and the
    SSH tunnel to open first when it listens on loopback only ('' otherwise)."""
    if bind in ("127.0.0.1", "::1"):
        return f"127.0.0.1:{port}", f"ssh -N -L {port}:127.0.0.1:{port} {s.address}"
    address = s.address if bind in ("0.0.0.0", "::") else bind
    return (f"[{address}]:{port}" if ":" in address else f"{address}:{port}"), ""


def secrets_of(s: HostSettings) -> dict[str, str]:
    path = resolve_controller_path(s["secrets_dir"]) / "hosts" / f"{s.name}.json"
    if not path.is_file():
        raise RuntimeError(f"{s.name} has no secrets yet ({path}): deploy it first")
    return json.loads(path.read_text())


def logins(inventory_path: str, host_name: str | None = None) -> str:
    hosts = inventory_hosts(inventory_path)
    settings = [s for s in validate_inventory({h.name: h.data.dict() for h in hosts})
                if (host_name is None or s.name == host_name)
                and (s.has("openwebui") or s.has("litellm"))]
    if not settings:
        raise RuntimeError(f"no host {'named ' + host_name + ' ' if host_name else ''}"
                           "runs Open WebUI or LiteLLM in this inventory")
    lines = []
    for s in settings:
        secrets = secrets_of(s)
        lines.append(f"{s.name}:")
        if s.has("openwebui"):
            where, tunnel = reach(s, s["openwebui_bind_address"], s["openwebui_port"])
            lines.append(f"  Open WebUI  http://{where}  admin {s['openwebui_admin_email']}"
                         f"  password {secrets['openwebui_admin_password']}")
            if tunnel:
                lines.append(f"              (loopback only: first {tunnel})")
        where, tunnel = reach(s, s["litellm_bind_address"], s["litellm_port"])
        ui = ("" if s["litellm_request_log"] else
              "  (off: it needs litellm_request_log; sparkstack usage reports instead)")
        lines.append(f"  LiteLLM UI  http://{where}/ui  user {s['litellm_ui_username']}"
                     f"  password {secrets['litellm_ui_password']}{ui}")
        if tunnel:
            lines.append(f"              (loopback only: first {tunnel})")
    return "\n".join(lines)
