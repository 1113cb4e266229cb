#!/usr/bin/env bash
# Idempotent set-up of a fresh clone: a virtual environment in .venv with the CPU torch wheel first
# (an exact pin: a looser one would pull a multi-GB CUDA build), then coldlabel with its local-LLM and
# test extras. The first install compiles llama.cpp (~7 min on 2 cores); pip caches the wheel after that.
# Re-running is instant while pyproject.toml is unchanged.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
"$PYTHON" -c 'import sys; assert sys.version_info >= (3, 11), "coldlabel needs Python >= 3.11"'
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
stamp=.venv/.coldlabel-installed
want=$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo ">> installing coldlabel into .venv (first time: several minutes)"
  .venv/bin/python -m pip install -q -U pip wheel
  .venv/bin/python -m pip install -q torch==2.13.0
  .venv/bin/python -m pip install -q -e '.[local,dev]'
  echo "$want" > "$stamp"
fi
