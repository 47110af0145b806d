"""A provider is alerted once per escalation, however often the notification arrives (the sender's
outbox may publish it twice: it cannot read another user's notification history)."""

from __future__ import annotations

import uuid

import pytest

from telehealth_client import events
from telehealth_client.consultation.session import now
from telehealth_client.protocol import channels
from telehealth_client.protocol.messages import EmergencyNotification, emergency_push_meta, encode

from .conftest import PROVIDER, SPECIALIST, Parts, RecordingHub

pytestmark = pytest.mark.integration


def notification(escalation_id: str) -> dict[str, object]:
    return encode(
        EmergencyNotification(
            title="Emergency escalation",
            body="critical escalation in department er",
            priority="critical",
            timestamp=now(),
            escalation_id=escalation_id,
        )
    )


async def test_the_same_escalation_alerts_a_provider_once(parts: Parts) -> None:
    hub = RecordingHub()
    await parts.provider(hub)
    sender = await parts.provider(RecordingHub(), SPECIALIST)
    first, second = str(uuid.uuid4()), str(uuid.uuid4())
    for escalation_id in (first, first, second):
        await sender.bus.publish(
            channels.notification(PROVIDER),
            notification(escalation_id),
            meta=emergency_push_meta("critical", escalation_id),
        )
    alerts = await hub.wait_for(lambda e: isinstance(e, events.EmergencyAlert), count=2)
    assert [a.escalation_id for a in alerts] == [first, second]
    assert [a.priority for a in alerts] == ["critical", "critical"]
    assert len([e for e in hub.items if isinstance(e, events.EmergencyAlert)]) == 2
