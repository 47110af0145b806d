"""Listing the chat through the local API is a read of PHI: each list is recorded in the agent's audit
trail before the text is served (``PHI_MESSAGE_READ``, action ``list``, resource ``chat-transcript``,
the agent's own user as actor, no chat text), the event reaches the clinic's audit sink, and a trail
that cannot record it refuses the list (503)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from telehealth_client import events
from telehealth_devstack.stack import DevStack
from tests.support.api import (
    CONSULTATION,
    KIOSK,
    WAIT,
    RunningAgent,
    consultation_joined,
)
from tests.support.audit import sink_events

pytestmark = pytest.mark.integration

ONE = f"/v1/consultations/{CONSULTATION}"
TEXT = "my knee hurts since tuesday"


async def joined_with_a_message(kiosk: RunningAgent, provider: RunningAgent, stack: DevStack) -> str:
    """The patient checked in, the provider joined, and the patient's message reached the provider."""
    await consultation_joined(kiosk, provider, stack)
    status, sent = await kiosk.api.post("/v1/chat", {"text": TEXT})
    assert status == 201, sent
    message_id: str = sent["message"]["id"]
    await provider.wait_event(lambda e: isinstance(e, events.ChatMessageAdded) and e.message_id == message_id)
    return message_id


def transcript_reads(recorded: list[dict[str, Any]], device_id: str) -> list[dict[str, Any]]:
    return [
        e
        for e in recorded
        if e.get("deviceId") == device_id and e["eventType"] == "PHI_MESSAGE_READ" and e["action"] == "list"
    ]


async def listed_and_audited(running: RunningAgent, path: str, role: str, stack: DevStack) -> None:
    """One list of the chat through ``running``'s API appends exactly one audit event, which reaches
    the sink naming the transcript, the agent's own user and no text."""
    durable = running.agent.durable
    assert durable is not None
    user_id = running.agent.settings.user_id
    before = durable.trail.status().records
    status, chat = await running.api.get(path)
    assert status == 200 and [m["text"] for m in chat["messages"]] == [TEXT]
    assert durable.trail.status().records == before + 1  # recorded before the answer, exactly once

    assert await durable.trail.wait_delivered(WAIT)
    [read] = transcript_reads(await sink_events(stack), user_id)
    assert read["sequence"] == before + 1 + durable.trail.status().base
    assert (read["actor"]["userId"], read["actor"]["role"], read["outcome"]) == (user_id, role, "success")
    assert read["resource"] == {"type": "chat-transcript", "id": CONSULTATION, "channel": CONSULTATION}
    assert read["metadata"] == {"sessionId": CONSULTATION, "via": "local-api"}
    assert TEXT not in json.dumps(read) and "knee" not in json.dumps(read)
    chain = await durable.trail.verify()  # the chain still verifies with it (telehealth-agent audit)
    assert chain.ok and chain.records == durable.trail.status().records, chain


async def test_listing_the_chat_is_audited_once_per_list_on_both_ends(
    kiosk: RunningAgent, provider: RunningAgent, stack: DevStack
) -> None:
    await joined_with_a_message(kiosk, provider, stack)
    await listed_and_audited(provider, f"{ONE}/chat", "provider", stack)
    await listed_and_audited(kiosk, "/v1/chat", "patient", stack)


async def test_a_trail_that_cannot_record_the_read_refuses_the_list(
    kiosk: RunningAgent, provider: RunningAgent, stack: DevStack
) -> None:
    await joined_with_a_message(kiosk, provider, stack)
    durable = kiosk.agent.durable
    assert durable is not None
    await durable.trail.aclose()  # the trail is closed: nothing more can be recorded

    status, answer = await kiosk.api.get("/v1/chat")
    assert (status, answer["error"]) == (503, "audit-unavailable"), answer
    assert "audit trail" in answer["message"] and TEXT not in json.dumps(answer)
    assert transcript_reads(await sink_events(stack), KIOSK) == []
