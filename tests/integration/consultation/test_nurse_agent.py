"""The nurse role through the agent: a nurse cart gets its standing token (departmentId from its
settings), connects and receives what a provider sends to its notification channel; it never sits
in an access-denied loop."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from telehealth_client.agent import Agent
from telehealth_client.config import load_settings
from telehealth_client.pubsub.bus import ConnectionStatus, Envelope
from telehealth_devstack.stack import DevStack
from tests.support.consultation import DEPARTMENT, NURSE, PROVIDER, WAIT, Parts, nurse_stack
from tests.support.logs import LogLines

pytestmark = pytest.mark.integration


@pytest.fixture
async def stack() -> AsyncIterator[DevStack]:
    async with nurse_stack() as running:
        yield running


async def test_a_nurse_cart_gets_its_standing_token_and_is_usable(
    parts: Parts, tmp_path: Path, log_lines: LogLines
) -> None:
    environment = {**parts.stack.agent_environment(NURSE), "TELEHEALTH_STATE_DIR": str(tmp_path / "nurse")}
    assert environment["TELEHEALTH_DEPARTMENT_ID"] == DEPARTMENT
    agent = Agent(load_settings(environ=environment))
    received: asyncio.Queue[Envelope] = asyncio.Queue()
    agent.notification_listeners.append(received.put)
    try:
        await agent.start()
        assert agent.bus is not None
        if agent.bus.status is not ConnectionStatus.CONNECTED:
            await asyncio.wait_for(agent.connected.wait(), WAIT)
        # A provider (standing token: write on every notification channel) reaches the nurse.
        clinic = parts.clinic(PROVIDER)
        grant = await clinic.request_token(PROVIDER, "provider", departmentId=DEPARTMENT)
        sender = parts.raw_bus(PROVIDER, grant.token)
        await sender.publish(f"notification.{NURSE}", {"type": "PATIENT_READY", "title": "t"})
        envelope = await asyncio.wait_for(received.get(), WAIT)
        assert (envelope.publisher, envelope.channel) == (PROVIDER, f"notification.{NURSE}")
        assert agent.bus.status is ConnectionStatus.CONNECTED
    finally:
        await agent.aclose()
    assert not [line for line in log_lines.lines if "access-denied" in line or "no access token" in line]
