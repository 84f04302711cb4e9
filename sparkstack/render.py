"""Rendering every service uses: templates, pip settings, proxy environment.

Kept free of pyinfra so that unit tests can render every file without a host. What is
particular to one service is rendered in that service's module.
"""

from __future__ import annotations

import shlex
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, StrictUndefined
from sparkstack_host.contract import CA_BUNDLE

from .fleet import Fleet
from .project import TEMPLATES
from .settings import HostSettings

_jinja = Environment(loader=FileSystemLoader(str(TEMPLATES)), undefined=StrictUndefined,
                     keep_trailing_newline=True, trim_blocks=True, lstrip_blocks=True)
_jinja.filters["shquote"] = shlex.quote


def _systemd_quoted(value: str) -> str:
    # systemd unquotes "..." with C escapes and expands % specifiers even inside quotes
    return '"' + (value.replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%")) + '"'


def exec_arg(value) -> str:
    """One word of an Exec*= line, as systemd will pass it: quoted, its specifiers and
    `$` (which systemd would expand as a variable) escaped."""
    return _systemd_quoted(str(value)).replace("$", "$$")


def environment_line(key: str, value) -> str:
    """An `Environment=` assignment whose value systemd reads back exactly."""
    return "Environment=" + _systemd_quoted(f"{key}={value}")


_jinja.filters["exec_arg"] = exec_arg
_jinja.globals["environment_line"] = environment_line


def template(name: str, **context) -> str:
    return _jinja.get_template(name).render(**context)


def pip_conf(s: HostSettings) -> str:
    """pip configuration used for every sparkstack venv (not the system's pip)."""
    lines = ["[global]", "disable-pip-version-check = true", "no-input = true"]
    if s["pip_index_url"]:
        lines.append(f"index-url = {s['pip_index_url']}")
    if s["pip_extra_index_urls"]:
        lines.append("extra-index-url = " + " ".join(s["pip_extra_index_urls"]))
    if s["pip_find_links"]:
        lines.append("find-links = " + " ".join(s["pip_find_links"]))
    if s["pip_trusted_hosts"]:
        lines.append("trusted-host = " + " ".join(s["pip_trusted_hosts"]))
    if s["extra_ca_certificates"]:
        lines.append(f"cert = {CA_BUNDLE}")
    if s["https_proxy"] or s["http_proxy"]:
        lines.append(f"proxy = {s['https_proxy'] or s['http_proxy']}")
    lines.append(f"constraint = {s.layout.pip_constraints}")
    return "\n".join(lines) + "\n"


def pip_constraints(s: HostSettings) -> str:
    return "".join(f"{line}\n" for line in s["pip_constraints"])


def proxy_environment(s: HostSettings, fleet: Fleet) -> dict[str, str]:
    """Proxy variables for services that call out (LiteLLM's cloud routes, pip)."""
    env: dict[str, str] = {}
    if s["http_proxy"]:
        env["HTTP_PROXY"] = env["http_proxy"] = s["http_proxy"]
    if s["https_proxy"]:
        env["HTTPS_PROXY"] = env["https_proxy"] = s["https_proxy"]
    if env:
        no_proxy = ",".join([s["no_proxy"], *fleet.addresses()])
        env["NO_PROXY"] = env["no_proxy"] = no_proxy
    if s["extra_ca_certificates"]:
        env.update(SSL_CERT_FILE=CA_BUNDLE, REQUESTS_CA_BUNDLE=CA_BUNDLE)
    return env


def ca_file_name(path: str, index: int) -> str:
    return f"sparkstack-{index}-{Path(path).stem}.crt"
