"""Restart: the patient agent, a real process, is SIGKILLed while waiting and again while in
progress; started again on the same state directory it resumes (fresh token, same subscriptions,
catch-up from the saved timetoken) and applies every message published meanwhile once, in order."""

from __future__ import annotations

from pathlib import Path

import pytest

from telehealth_client.consultation import state_file
from telehealth_client.protocol.messages import ConsultationState as S
from tests.support.agent_child import AgentChild, Launch
from tests.support.consultation import (
    AGENT_CHECK_IN,
    CONSULTATION,
    Parts,
    RecordingHub,
    queue_update,
)

pytestmark = pytest.mark.integration


async def test_a_killed_patient_agent_resumes_and_applies_what_it_missed_once(
    parts: Parts, launch: Launch, tmp_path: Path
) -> None:
    provider_hub = RecordingHub()
    provider = await parts.provider(provider_hub)
    await parts.record_consent()

    first: AgentChild = await launch()
    assert first.events("started")[0]["status"] == "idle"
    reply = await first.command("check-in", **AGENT_CHECK_IN)
    assert reply["ok"], reply
    await provider_hub.wait_state(S.CHECKED_IN)
    session = provider.session(CONSULTATION)
    await session.act(queue_update(4, 30))
    await first.wait_saved(await first.wait_state(S.WAITING))

    # Killed while waiting: two queue updates and the join are published while it is down.
    await first.kill()
    for position, minutes in ((3, 20), (2, 10)):
        await session.act(queue_update(position, minutes))
    await provider.join(CONSULTATION)

    second: AgentChild = await launch()
    assert second.events("started")[0]["status"].startswith("consultation connecting")
    await second.wait_state(S.CONNECTING)  # events reach stdout after "started"
    queue = [(e["position"], e["estimated_wait_minutes"]) for e in second.events("queue-updated")]
    assert queue == [(3, 20), (2, 10)]
    assert [(e["previous"], e["state"]) for e in second.events("state-changed")] == [
        ("waiting", "connecting")
    ]
    status = await second.command("status")
    assert (status["state"], status["queuePosition"]) == ("connecting", 2)

    # Killed while in progress: wrap-up is published while it is down.
    await provider.start_consultation(CONSULTATION)
    await second.wait_saved(await second.wait_state(S.IN_PROGRESS))
    await second.kill()
    await provider.wrap_up(CONSULTATION)

    third: AgentChild = await launch()
    await third.wait_state(S.WRAPPING_UP)
    assert [(e["previous"], e["state"]) for e in third.events("state-changed")] == [
        ("in-progress", "wrapping-up")
    ]
    assert third.events("queue-updated") == []
    await provider.end(CONSULTATION, follow_up_required=False)
    await third.wait_state(S.COMPLETED)
    await third.wait_line(lambda line: line.get("event") == "idle")
    assert [e["state"] for e in third.events("state-changed")] == ["wrapping-up", "completed"]
    assert state_file.load(tmp_path / "kiosk-state" / "consultation") is None
    assert (await third.command("status"))["idle"] is True
