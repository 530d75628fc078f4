#!/usr/bin/env bash
# Set up hybrid-lsp in ./.venv (Python 3.11+, Linux or macOS). Idempotent.
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
# llama.cpp is compiled from source by llama-cpp-python: build it for any x86-64/arm64
# CPU, not just this one (a cached native wheel can crash on another CPU).
CMAKE_ARGS="${CMAKE_ARGS:--DGGML_NATIVE=OFF}" .venv/bin/python -m pip install -q -e ".[dev]"
# The VS Code extension's build and tests (Node 20+); skipped where npm is absent.
if command -v npm >/dev/null 2>&1; then
  (cd editors/vscode && npm ci --prefer-offline --no-audit --no-fund --loglevel=error)
fi
echo "hybrid-lsp is set up in .venv" >&2
