"""Emergency escalation end to end on the real relay and clinic stand-in: one call by a provider
reaches the department's channel, every on-call provider's notification channel (with push
payloads that carry no reason) and the audit trail (IDs and severity only); a resolution is
published, audited and closes the escalation on every desk following the channel."""

from __future__ import annotations

import json

import pytest

from telehealth_client.protocol import channels
from tests.support.audit import sink_events
from tests.support.consultation import Parts
from tests.support.emergency import (
    CANARY,
    CONSULTATION,
    DEPARTMENT,
    EMERGENCY_CHANNEL,
    ON_CALL,
    OTHER,
    PROVIDER,
    SPECIALIST,
    WAIT,
    alert,
    envelopes_of,
    escalation_update,
    notification_reader,
    staff,
    stored_events,
)
from tests.support.logs import LogLines

pytestmark = pytest.mark.integration


async def test_an_escalation_reaches_the_channel_every_on_call_provider_and_the_audit_trail(
    parts: Parts, log_lines: LogLines
) -> None:
    readers = {
        user_id: await notification_reader(parts, user_id) for user_id in ON_CALL if user_id != PROVIDER
    }
    lee = await staff(parts, PROVIDER)
    okafor = await staff(parts, SPECIALIST)
    park = await staff(parts, OTHER)

    escalation = await lee.desk.escalate(CONSULTATION, "life-threatening", CANARY)
    # The department of the endpoint's settings, not the consultation ID's provider part.
    assert escalation.department_id == DEPARTMENT != PROVIDER
    assert (escalation.status, escalation.reason, escalation.escalated_by) == ("active", CANARY, PROVIDER)
    await lee.hub.wait_for(escalation_update(escalation.id, delivered=True))
    # Every on-call provider but the one escalating (its token may not write its own channel).
    others = [user_id for user_id in ON_CALL if user_id != PROVIDER]
    await lee.hub.wait_for(escalation_update(escalation.id, notified=len(others)))
    assert lee.desk.get(escalation.id).notified == len(others)

    for user_id in others:
        inbox = readers[user_id]
        await inbox.wait_for(1)
        [envelope] = envelopes_of(inbox, escalation.id)
        assert envelope.publisher == PROVIDER and envelope.channel == channels.notification(user_id)
        assert envelope.message["type"] == "EMERGENCY_ESCALATION"
        assert envelope.message["priority"] == "critical"
        meta = envelope.meta
        assert meta is not None and {"pn_apns", "pn_gcm"} <= set(meta)
        pushed = json.dumps(meta)
        assert escalation.id in pushed and "LIFE-THREATENING" in pushed
        assert "CANARY" not in pushed and "CANARY" not in json.dumps(envelope.message)
    for member in (okafor, park):
        await member.hub.wait_for(alert(escalation.id))
    await lee.durable.outbox.wait_drained(WAIT)
    assert not [line for line in log_lines.lines if "emergency publish failed" in line]

    # Another provider following the department's channel sees it open, reason included.
    await okafor.hub.wait_for(escalation_update(escalation.id, status="active"))
    [seen] = okafor.desk.open
    assert (seen.id, seen.consultation_id, seen.severity, seen.reason, seen.escalated_by) == (
        escalation.id,
        CONSULTATION,
        "life-threatening",
        CANARY,
        PROVIDER,
    )
    assert not seen.own

    # Audited with IDs and severity only, in the store and at the sink.
    await lee.durable.trail.wait_delivered(WAIT)
    [triggered] = [
        e for e in stored_events(lee.durable) if e["eventType"] == "EMERGENCY_ESCALATION_TRIGGERED"
    ]
    assert triggered["resource"] == {"type": "escalation", "id": escalation.id, "channel": EMERGENCY_CHANNEL}
    assert triggered["action"] == "escalate"
    assert triggered["metadata"]["severity"] == "life-threatening"
    assert triggered["metadata"]["sessionId"] == CONSULTATION
    at_sink = await sink_events(parts.stack)
    assert triggered["id"] in {e["id"] for e in at_sink}
    assert "CANARY" not in json.dumps(stored_events(lee.durable)) + json.dumps(at_sink)
    assert not [line for line in log_lines.lines if "CANARY" in line]


async def test_a_resolution_is_published_audited_and_closes_the_escalation_everywhere(
    parts: Parts, log_lines: LogLines
) -> None:
    lee = await staff(parts, PROVIDER)
    okafor = await staff(parts, SPECIALIST)
    escalation = await lee.desk.escalate(CONSULTATION, "urgent", CANARY)
    await okafor.hub.wait_for(escalation_update(escalation.id, status="active"))
    assert [e.id for e in lee.desk.open] == [e.id for e in okafor.desk.open] == [escalation.id]

    # The other provider resolves it: the escalating desk learns it from the channel.
    resolved = await okafor.desk.resolve(escalation.id, "CANARY-res stabilised, transferred to ICU")
    assert (resolved.status, resolved.resolved_by) == ("resolved", SPECIALIST)
    await lee.hub.wait_for(escalation_update(escalation.id, status="resolved"))
    assert lee.desk.open == okafor.desk.open == []
    assert lee.desk.get(escalation.id).resolution == "CANARY-res stabilised, transferred to ICU"
    assert lee.desk.get(escalation.id).resolved_by == SPECIALIST

    await okafor.durable.trail.wait_delivered(WAIT)
    [record] = [
        e for e in stored_events(okafor.durable) if e["eventType"] == "EMERGENCY_ESCALATION_TRIGGERED"
    ]
    assert (record["action"], record["resource"]["id"]) == ("resolve", escalation.id)
    at_sink = await sink_events(parts.stack)
    assert record["id"] in {e["id"] for e in at_sink}
    assert "CANARY" not in json.dumps(stored_events(okafor.durable)) + json.dumps(at_sink)
    assert not [line for line in log_lines.lines if "CANARY" in line]
