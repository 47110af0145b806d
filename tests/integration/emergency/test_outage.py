"""An escalation raised while this cart cannot reach PubNub is reported not yet delivered and goes
out exactly once when the link returns; while the clinic cannot say who is on call, the lookup is
retried until it answers, then the on-call providers are notified, and a resolution that turns on
the on-call list waits for it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

from telehealth_client.consultation.provider import ProviderEndpoint
from telehealth_client.durability import Durable
from telehealth_client.emergency.desk import EmergencyDesk, EmergencyError
from telehealth_client.protocol import channels
from telehealth_client.pubsub.bus import Bus
from telehealth_devstack.network import CuttableLink
from tests.support.emergency import (
    CANARY,
    CONSULTATION,
    DEPARTMENT,
    EMERGENCY_CHANNEL,
    OTHER,
    PROVIDER,
    SPECIALIST,
    WAIT,
    EmergencyParts,
    RecordingHub,
    alert,
    envelopes_of,
    escalation_update,
    notification_reader,
    staff,
)
from tests.support.logs import LogLines

pytestmark = pytest.mark.integration


async def copies_in_history(bus: Bus, channel: str, field: str, value: str) -> int:
    """How many messages the relay stored on ``channel`` with ``field`` equal to ``value``."""
    stored = await bus.history(channel, limit=100)
    return sum(1 for e in stored if isinstance(e.message, dict) and e.message.get(field) == value)


async def test_an_escalation_while_the_relay_is_unreachable_is_delivered_once_when_it_returns(
    parts: EmergencyParts,
) -> None:
    okafor = await staff(parts, SPECIALIST)
    reader = await notification_reader(parts, OTHER)
    async with CuttableLink(parts.stack.agent_environment()["TELEHEALTH_ORIGIN"]) as link:
        lee = await staff(parts, PROVIDER, origin=link.origin)
        link.cut()
        escalation = await lee.desk.escalate(CONSULTATION, "critical", CANARY)
        assert not escalation.delivered
        [first] = await lee.hub.wait_for(escalation_update(escalation.id))
        assert (first.status, first.delivered) == ("active", False)
        # The clinic answered (it is reachable): the notifications wait in the outbox too.
        await lee.hub.wait_for(escalation_update(escalation.id, notified=2))
        assert lee.desk.get(escalation.id).delivered is False  # type: ignore[union-attr]
        assert escalation.id in {item.id for item in lee.durable.outbox.pending()}

        link.restore()
        await lee.hub.wait_for(escalation_update(escalation.id, delivered=True))
        await okafor.hub.wait_for(escalation_update(escalation.id, status="active"))
        await okafor.hub.wait_for(alert(escalation.id))
        await reader.wait_for(1)
        assert await lee.durable.outbox.wait_drained(WAIT)

    # Exactly once: on the department's channel and on each on-call provider's channel.
    bus = okafor.endpoint.bus
    assert await copies_in_history(bus, EMERGENCY_CHANNEL, "id", escalation.id) == 1
    assert len(envelopes_of(reader, escalation.id)) == 1
    assert [e.id for e in okafor.desk.open] == [escalation.id]
    delivered = [e for e in lee.hub.items if escalation_update(escalation.id, delivered=True)(e)]
    assert delivered and all(e.notified == 2 for e in delivered)


@asynccontextmanager
async def lee_through(
    parts: EmergencyParts, origin: str
) -> AsyncIterator[tuple[RecordingHub, Durable, EmergencyDesk]]:
    """Lee's cart reaching the clinic through ``origin`` (a ``CuttableLink``), started while the
    clinic is reachable for the standing token: its hub, its outbox and audit trail, its desk."""
    hub = RecordingHub()
    durable = await parts.durable("lee-durable", PROVIDER, outbox_backoff=(0.05, 0.5))
    endpoint = ProviderEndpoint(
        parts.connector_via(PROVIDER, origin),
        hub,
        user_id=PROVIDER,
        department_id=DEPARTMENT,
        state_dir=parts.tmp_path / PROVIDER,
        durable=durable,
    )
    try:
        await endpoint.start()
        desk = endpoint.emergency
        assert desk is not None
        yield hub, durable, desk
    finally:
        await endpoint.aclose()


async def test_the_on_call_lookup_is_retried_until_the_clinic_answers(
    parts: EmergencyParts, log_lines: LogLines
) -> None:
    assert parts.stack.clinic is not None
    clinic_origin = parts.stack.clinic.url.removeprefix("http://")
    reader = await notification_reader(parts, SPECIALIST)
    async with CuttableLink(clinic_origin) as link, lee_through(parts, link.origin) as (hub, _, desk):
        link.cut()
        escalation = await desk.escalate(CONSULTATION, "urgent", CANARY)
        await hub.wait_for(escalation_update(escalation.id, delivered=True))
        await log_lines.wait_line("on-call list unavailable", "department=er")
        assert desk.get(escalation.id).notified is None  # type: ignore[union-attr]
        assert not [e for e in hub.items if escalation_update(escalation.id)(e) and e.notified is not None]

        link.restore()
        [notified] = await hub.wait_for(escalation_update(escalation.id, notified=2))
        assert notified.delivered
        envelopes = await reader.wait_for(1)
        assert [e.message["escalationId"] for e in envelopes] == [escalation.id]
        assert envelopes[0].channel == channels.notification(SPECIALIST)


async def test_while_the_clinic_cannot_say_who_is_on_call_a_resolution_waits_and_is_not_lost(
    parts: EmergencyParts, log_lines: LogLines
) -> None:
    """Lee's cart loses the clinic: an on-call provider's resolution of Okafor's escalation is held
    (the escalation stays open there) and recorded once the clinic answers; Okafor's resolution of
    his own escalation needs no list and is taken at once; Lee's own resolve of an escalation he did
    not raise cannot be checked and is refused, publishing nothing."""
    assert parts.stack.clinic is not None
    clinic_origin = parts.stack.clinic.url.removeprefix("http://")
    okafor = await staff(parts, SPECIALIST)
    park = await staff(parts, OTHER)
    async with CuttableLink(clinic_origin) as link, lee_through(parts, link.origin) as (hub, durable, desk):
        park_resolves = await okafor.desk.escalate(CONSULTATION, "critical", CANARY)
        okafor_resolves = await okafor.desk.escalate(CONSULTATION, "urgent", CANARY)
        for escalation in (park_resolves, okafor_resolves):
            await hub.wait_for(escalation_update(escalation.id, status="active"))
            await park.hub.wait_for(escalation_update(escalation.id, status="active"))
        link.cut()

        with pytest.raises(EmergencyError) as refused:
            await desk.resolve(park_resolves.id, "handled by lee")
        assert refused.value.field == "resolvedBy" and "did not say who is on call" in refused.value.reason
        assert durable.outbox.pending() == []

        await park.desk.resolve(park_resolves.id, "handled by park")
        await log_lines.wait_line("emergency resolution held", f"id={park_resolves.id}", f"desk={PROVIDER}")
        await okafor.desk.resolve(okafor_resolves.id, "handled by okafor")
        await hub.wait_for(escalation_update(okafor_resolves.id, status="resolved"))
        assert [e.id for e in desk.open] == [park_resolves.id]  # held, not lost, not taken

        link.restore()
        await hub.wait_for(escalation_update(park_resolves.id, status="resolved"))
        kept = desk.get(park_resolves.id)
        assert kept is not None and (kept.resolved_by, kept.resolution) == (OTHER, "handled by park")
