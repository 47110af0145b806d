"""The kiosk's settings on a development stack for the preflight tests, and packet loss on coturn's
relay ports (iptables ``statistic`` match on ``lo``, removed afterwards)."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from telehealth_client.config import Settings, load_settings
from telehealth_devstack.stack import DevStack
from telehealth_devstack.turn import TurnServer
from tests.support.consultation import KIOSK


def kiosk_environment(devstack: DevStack, **extra: str) -> dict[str, str]:
    """What a kiosk agent on this stack is given, plus ``extra`` (``TELEHEALTH_*`` variables)."""
    return {**devstack.agent_environment(), "TELEHEALTH_USER_ID": KIOSK, **extra}


def kiosk_settings(devstack: DevStack, **extra: str) -> Settings:
    return load_settings(environ=kiosk_environment(devstack, **extra))


def _iptables_usable() -> str | None:
    if shutil.which("iptables") is None:
        return "iptables is not installed (scripts/install-system-deps.sh --test installs it)"
    if os.geteuid() != 0:
        return "iptables needs root"
    return None


@contextmanager
def packet_loss(turn: TurnServer, probability: float) -> Iterator[None]:
    """Drop ``probability`` of the UDP datagrams coturn relays between two of its allocations.

    Only datagrams from a relay port to a relay port of this coturn on ``lo`` match: the media
    path between the two peers, and nothing of the other tests sharing the machine.
    """
    reason = _iptables_usable()
    if reason is not None:
        pytest.skip(reason)
    low, high = turn.relay_ports
    rule = [
        "INPUT", "-i", "lo", "-p", "udp", "--sport", f"{low}:{high}", "--dport", f"{low}:{high}",
        "-m", "statistic", "--mode", "random", "--probability", f"{probability}", "-j", "DROP",
    ]  # fmt: skip
    subprocess.run(["iptables", "-A", *rule], check=True, capture_output=True)
    try:
        yield
    finally:
        subprocess.run(["iptables", "-D", *rule], check=True, capture_output=True)
