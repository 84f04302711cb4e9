#!/usr/bin/env bash
# What the end-to-end tests drive besides the SDKs (as root): Debian's Chromium, for
# Playwright to open the HTML report and Open WebUI in, and the real Claude Code CLI.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
CLAUDE_CODE=2.1.331   # the Claude Code release the tests prove against the pinned LiteLLM
if ! command -v chromium >/dev/null; then
  echo "[test-tools] apt-get install chromium"
  apt-get update -qq
  apt-get install -y -qq chromium >/dev/null
fi
if [ "$(claude --version 2>/dev/null | cut -d' ' -f1)" != "$CLAUDE_CODE" ]; then
  echo "[test-tools] npm install -g @anthropic-ai/claude-code@$CLAUDE_CODE"
  npm install -g --silent --no-fund --no-audit "@anthropic-ai/claude-code@$CLAUDE_CODE"
fi
