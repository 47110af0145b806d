"""systemd's watchdog: with ``WATCHDOG_USEC`` set, the agent sends ``WATCHDOG=1`` from its event
loop every half of it while the loop turns (``telehealth-agent run``), and a blocked loop stops
the pings (the agent in a child process, told to block its loop)."""

from __future__ import annotations

import asyncio
import os
import signal
from itertools import pairwise
from pathlib import Path

import pytest

from telehealth_devstack.relay import Relay
from tests.support import bus as bus_support
from tests.support.agent_child import AgentChildren
from tests.support.cli import AGENT, Process, clean_environment, notified, notify_socket, watchdog_pings

pytestmark = pytest.mark.integration

WATCHDOG_SECONDS = 0.6  # WatchdogSec: the agent pings every 0.3 s
BLOCK_SECONDS = 1.5  # five ping intervals


def watched_agent_env(relay: Relay, notify_path: Path) -> dict[str, str]:
    return clean_environment(
        {
            "TELEHEALTH_ROLE": "provider",
            "TELEHEALTH_USER_ID": "dr-watchdog",
            "TELEHEALTH_ORIGIN": relay.origin,
            "TELEHEALTH_SSL": "false",
            "TELEHEALTH_PUBLISH_KEY": bus_support.PUBLISH_KEY,
            "TELEHEALTH_SUBSCRIBE_KEY": bus_support.SUBSCRIBE_KEY,
            "TELEHEALTH_CIPHER_KEY": "watchdog-cipher-key-01",
            "TELEHEALTH_API_TOKEN": "watchdog-api-token",
            "TELEHEALTH_API_PORT": "0",
            "NOTIFY_SOCKET": str(notify_path),
            "WATCHDOG_USEC": str(int(WATCHDOG_SECONDS * 1_000_000)),
        }
    )


async def test_run_pings_the_watchdog_every_half_watchdog_sec(relay: Relay, tmp_path: Path) -> None:
    notify_path = tmp_path / "notify.sock"
    with notify_socket(notify_path) as notify:
        env = {**os.environ, **watched_agent_env(relay, notify_path)}
        process = await Process.spawn(*AGENT, "run", env=env)
        await notified(notify, b"READY=1")
        pings = await watchdog_pings(notify, 4)
        process.send_signal(signal.SIGTERM)
        code, _, err = await process.finish()
    assert code == 0, err
    gaps = [later - earlier for earlier, later in pairwise(pings)]
    assert max(gaps) <= WATCHDOG_SECONDS, gaps


async def test_a_blocked_event_loop_stops_the_pings(
    relay: Relay, tmp_path: Path, agent_children: AgentChildren
) -> None:
    notify_path = tmp_path / "notify.sock"
    with notify_socket(notify_path) as notify:
        agent = await agent_children.start(watched_agent_env(relay, notify_path))
        before = await watchdog_pings(notify, 2)
        blocked = asyncio.ensure_future(agent.command_ok("block", seconds=BLOCK_SECONDS))
        after = await watchdog_pings(notify, 3, within=BLOCK_SECONDS + 10.0)
        await blocked
    gaps = [later - earlier for earlier, later in pairwise(before[-1:] + after)]
    # One gap spans the block (no ping in it); the loop free again, the pings resume at their pace.
    assert max(gaps) >= BLOCK_SECONDS - 0.1, gaps
    assert gaps[-1] <= WATCHDOG_SECONDS, gaps
