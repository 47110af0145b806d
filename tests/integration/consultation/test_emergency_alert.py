"""A provider is alerted once per escalation, however often the notification arrives (the sender's
outbox may publish it twice: it cannot read another user's notification history)."""

from __future__ import annotations

import uuid

import pytest

from telehealth_client import events
from telehealth_client.consultation.session import now
from telehealth_client.protocol import channels
from telehealth_client.protocol.messages import EmergencyNotification, emergency_push_meta, encode

from .conftest import CONSULTATION, PROVIDER, SPECIALIST, WAIT, Parts, RecordingHub

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


# -- a cart that was off when the escalation was raised -----------------------------------------------


def alerts_in(hub: RecordingHub) -> list[str]:
    return [e.escalation_id for e in hub.items if isinstance(e, events.EmergencyAlert)]


async def test_a_provider_whose_cart_was_off_is_alerted_once_at_start_and_not_again_after_a_restart(
    parts: Parts,
) -> None:
    """PROTOCOL.md, "Emergency": the notification sat unread in its channel's history; at start the
    cart alerts for each escalation still open (not one resolved meanwhile), once, across restarts
    too (the last-read timetoken and the alerted IDs are kept in its state)."""
    sender_hub = RecordingHub()
    sender_store = await parts.durable("sender", SPECIALIST)
    sender = await parts.provider(sender_hub, SPECIALIST, durable=sender_store)
    assert sender.emergency is not None
    open_one = await sender.emergency.escalate(CONSULTATION, "critical", "still open")
    resolved_one = await sender.emergency.escalate(CONSULTATION, "urgent", "handled meanwhile")
    for escalation_id in (open_one.id, resolved_one.id):  # each notified to PROVIDER, on call and off
        await sender_hub.wait_for(
            lambda e, i=escalation_id: (
                isinstance(e, events.EmergencyUpdated) and e.escalation_id == i and e.notified == 1
            )
        )
    await sender.emergency.resolve(resolved_one.id, "seen to")
    assert await sender_store.outbox.wait_drained(WAIT)  # every notification and the resolution sent
    stored = [m.publisher for m in parts.stack.relay.stored_messages(channels.notification(PROVIDER))]
    assert stored == [SPECIALIST, SPECIALIST]

    # The cart starts: alerted once, for the open escalation only, before start() returns.
    hub = RecordingHub()
    cart_store = await parts.durable("cart", PROVIDER)
    cart = await parts.provider(hub, durable=cart_store)
    assert alerts_in(hub) == [open_one.id]
    [alert] = [e for e in hub.items if isinstance(e, events.EmergencyAlert)]
    assert alert.priority == "critical"
    await cart.aclose()
    await cart_store.aclose()

    # Restarted on the same state: nothing new to alert, and nothing alerted twice.
    again = RecordingHub()
    restarted = await parts.provider(again, durable=await parts.durable("cart", PROVIDER))
    assert restarted.emergency is not None and restarted.emergency.get(open_one.id) is not None
    assert alerts_in(again) == []
    # A new escalation while it runs still alerts, live.
    newer = await sender.emergency.escalate(CONSULTATION, "life-threatening", "another one")
    await again.wait_for(lambda e: isinstance(e, events.EmergencyAlert))
    assert alerts_in(again) == [newer.id]
