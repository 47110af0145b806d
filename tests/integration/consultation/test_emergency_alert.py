"""A provider is alerted once per escalation, however often the notification arrives (the sender's
outbox may publish it twice: it cannot read another user's notification history)."""

from __future__ import annotations

import json
import uuid

import pytest

from telehealth_client import events
from telehealth_client.consultation.session import now
from telehealth_client.emergency.desk import EmergencyDesk
from telehealth_client.protocol import channels
from telehealth_client.protocol.messages import (
    EmergencyEscalation,
    EmergencyNotification,
    EmergencyResolved,
    emergency_push_meta,
    encode,
)
from tests.support.consultation import (
    CONSULTATION,
    DEPARTMENT,
    PROVIDER,
    SPECIALIST,
    WAIT,
    Parts,
    RecordingHub,
)
from tests.support.logs import LogLines

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


# -- a notification that overtakes its escalation, a forged one, a late one (an outside review) ------


def escalation_message(escalation_id: str) -> dict[str, object]:
    """An escalation by SPECIALIST on the department's channel, published as its desk would."""
    return encode(
        EmergencyEscalation(
            id=escalation_id,
            consultation_id=CONSULTATION,
            escalated_by=SPECIALIST,
            severity="critical",
            reason="on the way",
            timestamp=now(),
        )
    )


async def test_a_notification_read_at_start_before_its_escalation_alerts_when_the_escalation_comes(
    parts: Parts, log_lines: LogLines
) -> None:
    """The outbox sends channels side by side, so the notification may land before the escalation;
    read at start, it is held (not skipped), and alerts once the escalation is on the channel."""
    sender = await parts.provider(RecordingHub(), SPECIALIST)
    escalation_id = str(uuid.uuid4())
    await sender.bus.publish(channels.notification(PROVIDER), notification(escalation_id))
    hub = RecordingHub()
    await parts.provider(hub, durable=await parts.durable("cart", PROVIDER))
    await log_lines.wait_line("emergency alert held", f"escalation={escalation_id}")
    assert alerts_in(hub) == []  # not confirmed: nobody has raised it on the staff-only channel
    await sender.bus.publish(channels.emergency(DEPARTMENT), escalation_message(escalation_id))
    await hub.wait_for(lambda e: isinstance(e, events.EmergencyAlert))
    assert alerts_in(hub) == [escalation_id]


async def test_a_held_notification_survives_a_restart_and_alerts_when_its_escalation_comes(
    parts: Parts, log_lines: LogLines
) -> None:
    sender = await parts.provider(RecordingHub(), SPECIALIST)
    store = await parts.durable("cart", PROVIDER)
    cart = await parts.provider(RecordingHub(), durable=store)
    escalation_id = str(uuid.uuid4())
    await sender.bus.publish(channels.notification(PROVIDER), notification(escalation_id))
    await log_lines.wait_line("emergency alert held", f"escalation={escalation_id}")
    await cart.aclose()
    await store.aclose()

    hub = RecordingHub()
    await parts.provider(hub, durable=await parts.durable("cart", PROVIDER))
    await sender.bus.publish(channels.emergency(DEPARTMENT), escalation_message(escalation_id))
    await hub.wait_for(lambda e: isinstance(e, events.EmergencyAlert))
    assert alerts_in(hub) == [escalation_id]


async def test_a_patients_notification_while_the_cart_starts_raises_no_alert(
    parts: Parts, log_lines: LogLines, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A patient may write its provider's notification channel. While the cart starts (subscribed,
    its desk not yet reading the emergency channel) a forged notification must not alert."""
    await parts.record_consent(patient="pat-forger")
    grant = await parts.clinic().request_token("pat-forger", "patient", providerId=PROVIDER)
    forger = parts.raw_bus("pat-forger", grant.token)
    desk_start = EmergencyDesk.start
    forged = str(uuid.uuid4())

    async def start_after_the_forgery(desk: EmergencyDesk) -> None:
        # A seam for the race, not a pause: the desk starts once the forged notification was read.
        await forger.publish(channels.notification(PROVIDER), notification(forged))
        await log_lines.wait_line("emergency alert held", f"escalation={forged}")
        await desk_start(desk)

    monkeypatch.setattr(EmergencyDesk, "start", start_after_the_forgery)
    hub = RecordingHub()
    cart = await parts.provider(hub, durable=await parts.durable("cart", PROVIDER))
    assert alerts_in(hub) == []
    await cart.aclose()  # the ledger is saved behind: closed, it is on disk
    ledger = json.loads((parts.tmp_path / "cart" / "alerts.json").read_text())
    assert forged not in ledger["alerted"] and forged in ledger["held"]  # waits, never alerts


async def test_a_late_notification_of_a_resolved_escalation_raises_no_alert(
    parts: Parts, log_lines: LogLines
) -> None:
    sender = await parts.provider(RecordingHub(), SPECIALIST)
    hub = RecordingHub()
    cart = await parts.provider(hub, durable=await parts.durable("cart", PROVIDER))
    escalation_id = str(uuid.uuid4())
    await sender.bus.publish(channels.emergency(DEPARTMENT), escalation_message(escalation_id))
    resolved = EmergencyResolved(id=escalation_id, resolved_by=SPECIALIST, resolution="done", timestamp=now())
    await sender.bus.publish(channels.emergency(DEPARTMENT), encode(resolved))
    await hub.wait_for(
        lambda e: (
            isinstance(e, events.EmergencyUpdated)
            and e.escalation_id == escalation_id
            and e.status == "resolved"
        )
    )
    assert cart.emergency is not None
    await sender.bus.publish(channels.notification(PROVIDER), notification(escalation_id))  # a late retry
    await log_lines.wait_line("emergency notification ignored", f"escalation={escalation_id}")
    assert alerts_in(hub) == []
