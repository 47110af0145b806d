#!/usr/bin/env bash
# Installs the Debian packages the agent and its tests need. Idempotent: does nothing
# (not even `apt-get update`) when every package is already present.
#   libportaudio2  PortAudio, loaded by sounddevice
#   alsa-utils     aplay/arecord, handy for checking ALSA devices by hand
#   coturn         the TURN server of the development stack and the tests
#   systemd        systemd-analyze, which verifies kiosk.service
# With --test, also what only the tests need:
#   nodejs, npm    the interop tests run the PubNub JavaScript SDK in Node (tests/js); installed
#                  only when `node` or `npm` is not on PATH (a newer Node may already be there)
#
#   scripts/install-system-deps.sh [--test]
set -euo pipefail

test_deps=false
for arg in "$@"; do
    case "$arg" in
        --test) test_deps=true ;;
        *) echo "usage: $0 [--test]" >&2; exit 2 ;;
    esac
done

packages=(libportaudio2 alsa-utils coturn systemd)
if $test_deps && ! { command -v node && command -v npm; } >/dev/null; then
    packages+=(nodejs npm)
fi
missing=()
for pkg in "${packages[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$pkg")
    fi
done

if [ ${#missing[@]} -eq 0 ]; then
    echo "system packages: all present (${packages[*]})"
else
    sudo=""
    if [ "$(id -u)" -ne 0 ]; then
        sudo="sudo"
    fi
    echo "system packages: installing ${missing[*]}"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
    # The coturn package starts no daemon by default; the development stack runs its own on loopback.
fi

# PubNub JavaScript SDK 12 sends through undici 7, which needs Node 20.18.1 or later; Debian 12's
# own nodejs is 18. Say so here; the interop tests fail with the same explanation.
if $test_deps; then
    if ! command -v node >/dev/null; then
        echo "warning: node is not on PATH; tests/js needs Node 20.18.1 or later" >&2
    elif ! node -e 'const [a, b, c] = process.versions.node.split(".").map(Number);
            process.exit(a > 20 || (a === 20 && (b > 18 || (b === 18 && c >= 1))) ? 0 : 1)'; then
        echo "warning: node $(node --version) is too old for tests/js (PubNub JavaScript SDK 12);" \
            "install Node 20.18.1 or later" >&2
    fi
fi
