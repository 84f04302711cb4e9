"""Run a host program on the Sparks of an inventory over SSH, outside a pyinfra deploy
(`sparkstack health` and the other operator commands)."""

from __future__ import annotations

import fnmatch
import shlex
import subprocess

from pyinfra.api import State
from pyinfra.context import ctx_state
from pyinfra_cli.inventory import make_inventory
from sparkstack_host.contract import Layout

from .settings import load_defaults


def inventory_hosts(inventory_path: str, limit: tuple[str, ...] = ()) -> list:
    """pyinfra's hosts of an inventory file, those named by `limit` (names, globs or
    groups) when given."""
    with ctx_state.use(State()):  # pyinfra's inventory loader expects a state
        inventory = make_inventory(inventory_path)
    return [h for h in inventory
            if not limit or any(fnmatch.fnmatch(h.name, pat) or pat in h.groups
                                for pat in limit)]


def layout_of(host) -> Layout:
    defaults = load_defaults()
    return Layout(*(host.data.get(key, defaults[key])
                    for key in ("install_root", "config_root", "state_root")))


def ssh_command(host) -> list[str]:
    d = host.data
    cmd = ["ssh", "-o", "BatchMode=yes", "-o", "ConnectTimeout=5", "-o", "LogLevel=ERROR"]
    if d.get("ssh_key"):
        cmd += ["-i", d.get("ssh_key")]
    if d.get("ssh_port"):
        cmd += ["-p", str(d.get("ssh_port"))]
    if d.get("ssh_strict_host_key_checking") == "off":
        cmd += ["-o", "StrictHostKeyChecking=no"]
    if d.get("ssh_known_hosts_file"):
        cmd += ["-o", f"UserKnownHostsFile={d.get('ssh_known_hosts_file')}"]
    user = d.get("ssh_user")
    target = d.get("ssh_hostname") or host.name
    return cmd + [f"{user}@{target}" if user else target]


def run_program(host, program: str, *args: str, timeout: float = 120,
                input: str | None = None) -> subprocess.CompletedProcess:
    """Run one of the host package's programs on `host` as root."""
    layout = layout_of(host)
    remote = shlex.join([layout.host_program(program), "--config-root",
                         layout.config_root, *args])
    if host.data.get("ssh_user") not in (None, "root"):
        remote = f"sudo -n sh -c {shlex.quote(remote)}"
    return subprocess.run(ssh_command(host) + [remote], capture_output=True, text=True,
                          timeout=timeout, input=input)
