#!/usr/bin/env bash
# Set up and run the main job on the embedded default: SQLite store, no broker, a local llama.cpp server
# started on demand. Extra arguments go to `coldlabel demo` (e.g. --users 5 --preset tiny).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/coldlabel demo "$@"
