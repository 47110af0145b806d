#!/usr/bin/env bash
# Installs everything: system packages, then a virtual environment in .venv with the agent.
#   scripts/setup.sh          the agent only
#   scripts/setup.sh --test   the agent plus test, lint and type-check tools
set -euo pipefail
cd "$(dirname "$0")/.."

extra=""
if [ "${1:-}" = "--test" ]; then
    extra="[test]"
fi

scripts/install-system-deps.sh

python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$python" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".${extra}"
echo "installed: $(.venv/bin/telehealth-agent version)"
