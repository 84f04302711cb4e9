#!/usr/bin/env bash
# Install what sparkstack needs on the controller (a Debian/Ubuntu machine, as root):
# the tools for simulated Sparks, then a venv in .venv with sparkstack, its host package
# (checks/) and its tests.
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive
need=()
for tool in systemd-nspawn:systemd-container debootstrap:debootstrap ip:iproute2 \
            iptables:iptables ssh:openssh-client; do
  command -v "${tool%%:*}" >/dev/null || need+=("${tool##*:}")
done
python3 -c 'import venv, ensurepip' 2>/dev/null || need+=(python3-venv)
if [ ${#need[@]} -gt 0 ]; then
  echo "[setup] apt-get install ${need[*]}"
  apt-get update -qq
  apt-get install -y -qq "${need[@]}" >/dev/null
fi
[ -x .venv/bin/python ] || python3 -m venv .venv
echo "[setup] installing sparkstack into .venv"
.venv/bin/pip install -q --disable-pip-version-check -e ./checks -e '.[test,simulated]' 2>&1 | grep -v '^WARNING: Location' || true
.venv/bin/python -c 'import sparkstack, sparkstack_host, pyinfra, openai, anthropic, pytest' 
