#!/usr/bin/env bash
# Set up, lint (ruff, and the import-linter layer contract), then run the whole test suite, slow tests included.
# Redis and PostgreSQL are started by the test fixtures if down;
# the local llama.cpp server is started by a fixture from the packaged SmolLM2 model.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check .
.venv/bin/lint-imports
set +e
.venv/bin/python -m pytest -n 0 -m "slow or not slow" "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
  echo "pytest collected no tests: failing on purpose (exit 5 must never pass silently)" >&2
  exit 1
fi
exit "$rc"
