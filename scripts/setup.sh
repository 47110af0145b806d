#!/usr/bin/env bash
# Installs everything: system packages, then a virtual environment in .venv with the agent.
#   scripts/setup.sh          the agent only
#   scripts/setup.sh --test   the agent plus test, lint and type-check tools, and the PubNub
#                             JavaScript SDK for the interop tests (npm ci in tests/js)
set -euo pipefail
cd "$(dirname "$0")/.."

extra=""
system_args=()
if [ "${1:-}" = "--test" ]; then
    extra="[test]"
    system_args=(--test)
fi

scripts/install-system-deps.sh "${system_args[@]}"

python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$python" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".${extra}"
if [ -n "$extra" ]; then
    # Exactly the versions in tests/js/package-lock.json.
    npm ci --prefix tests/js --no-audit --no-fund
fi
echo "installed: $(.venv/bin/telehealth-agent version)"
