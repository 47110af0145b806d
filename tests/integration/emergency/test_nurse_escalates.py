"""A nurse's cart (a real Agent with the nurse role) escalates through ``agent.emergency``: the
department's providers see it on the channel and are alerted on their notification channels; the
audit record names the nurse as the actor."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import AsyncIterator
from contextlib import closing
from pathlib import Path

import pytest

from telehealth_client.agent import Agent
from telehealth_client.audit.trail import store_path
from telehealth_client.config import load_settings
from telehealth_devstack.stack import DevStack
from tests.support.consultation import NURSE, nurse_stack
from tests.support.emergency import (
    CANARY,
    CONSULTATION,
    DEPARTMENT,
    PROVIDER,
    WAIT,
    EmergencyParts,
    RecordingHub,
    alert,
    escalation_update,
    staff,
)
from tests.support.logs import LogLines

pytestmark = pytest.mark.integration


@pytest.fixture
async def stack() -> AsyncIterator[DevStack]:
    async with nurse_stack() as running:
        yield running


async def test_a_nurse_cart_escalates_and_the_on_call_provider_is_alerted(
    parts: EmergencyParts, tmp_path: Path, log_lines: LogLines
) -> None:
    lee = await staff(parts, PROVIDER)
    environment = {**parts.stack.agent_environment(NURSE), "TELEHEALTH_STATE_DIR": str(tmp_path / "nurse")}
    assert environment["TELEHEALTH_DEPARTMENT_ID"] == DEPARTMENT
    agent = Agent(load_settings(environ=environment))
    hub = agent.hub = RecordingHub()  # the agent's own hub, keeping what it emitted
    try:
        await agent.start()
        desk = agent.emergency
        assert desk is not None
        escalation = await desk.escalate(CONSULTATION, "critical", CANARY)
        assert escalation.escalated_by == NURSE
        await hub.wait_for(escalation_update(escalation.id, delivered=True, notified=1))
        await lee.hub.wait_for(alert(escalation.id))
        await lee.hub.wait_for(escalation_update(escalation.id, status="active"))
        [seen] = lee.desk.open
        assert (seen.escalated_by, seen.reason) == (NURSE, CANARY)
        assert agent.durable is not None
        assert await agent.durable.trail.wait_delivered(WAIT)
        with closing(sqlite3.connect(store_path(agent.durable.state_dir))) as db:
            records = [json.loads(row[0]) for row in db.execute("SELECT event FROM records")]
        [triggered] = [r for r in records if r["eventType"] == "EMERGENCY_ESCALATION_TRIGGERED"]
        assert triggered["actor"]["userId"] == NURSE and triggered["actor"]["role"] == "nurse"
        assert "CANARY" not in json.dumps(records)
    finally:
        await agent.aclose()
    assert not [line for line in log_lines.lines if "CANARY" in line]
