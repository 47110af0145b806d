#!/usr/bin/env bash
# Installs the Debian packages the agent (and, with --test, its tests) need. Idempotent: does
# nothing (not even `apt-get update`) when every package is already present.
#   libportaudio2  PortAudio, loaded by sounddevice
#   alsa-utils     aplay/arecord, handy for checking ALSA devices by hand
#   coturn         the TURN server of the development stack and the tests
#   systemd        systemd-analyze, which verifies kiosk.service
#   util-linux     setpriv: the development stack's coturn dies with the process that started it
# With --test, also:
#   chromium       headless browser for the tests: a provider call page calls the kiosk (tests/js)
#   iptables       the tests and bench_call impair loopback with it (packet loss, dropped UDP)
#   python3-venv   the system Python's venv: the installer tests install a kiosk with /usr/bin/python3,
#                  as a real kiosk is (the service cannot run a Python under /root or /home)
set -euo pipefail

packages=(libportaudio2 alsa-utils coturn systemd util-linux)
if [ "${1:-}" = "--test" ]; then
    packages+=(chromium iptables python3-venv)
fi
missing=()
for pkg in "${packages[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$pkg")
    fi
done

if [ ${#missing[@]} -eq 0 ]; then
    echo "system packages: all present (${packages[*]})"
    exit 0
fi

sudo=""
if [ "$(id -u)" -ne 0 ]; then
    sudo="sudo"
fi
echo "system packages: installing ${missing[*]}"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
# The coturn package starts no daemon by default; the development stack runs its own on loopback.
