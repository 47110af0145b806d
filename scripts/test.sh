#!/usr/bin/env bash
# Lint, type-check, then the whole test suite. Extra arguments go to pytest (both parts).
#
# The suite runs in two parts: first the tests that do not depend on real-time pacing, two at a
# time (pytest-xdist, one worker per core of a 2-core machine), then the real-time ones (marked
# `realtime` in tests/conftest.py: calls, devices, Chromium) one at a time, so the other tests' load
# never decides their verdict. Each part lists its twenty slowest tests: where the time goes.
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy

NO_TESTS_COLLECTED=5  # pytest's exit status when a selection (say, one file) holds none of a part

part() {
    .venv/bin/python -m pytest -p no:cacheprovider --durations=20 "$@"
}

set +e
part -n "${TEST_WORKERS:-2}" -m "not realtime" "$@"
others=$?
part -m realtime "$@"
realtime=$?
set -e

failed=0
for status in "$others" "$realtime"; do
    if [ "$status" -ne 0 ] && [ "$status" -ne "$NO_TESTS_COLLECTED" ]; then
        failed=$status
    fi
done
if [ "$others" -eq "$NO_TESTS_COLLECTED" ] && [ "$realtime" -eq "$NO_TESTS_COLLECTED" ]; then
    echo "scripts/test.sh: no test selected" >&2
    failed=$NO_TESTS_COLLECTED
fi
exit "$failed"
