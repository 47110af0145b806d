#!/usr/bin/env bash
# Lint, type-check, then the whole test suite. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
# The twenty slowest tests are listed at the end: where the suite's time goes.
.venv/bin/python -m pytest -p no:cacheprovider --durations=20 "$@"
