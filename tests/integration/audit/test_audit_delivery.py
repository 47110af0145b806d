"""Audit events reach the clinic's audit sink and ``audit.{org}`` on the relay: exactly once at the
sink after an outage, across a restart, in order on the channel, and a refusal is kept, not dropped.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import pytest

from telehealth_client.audit.trail import (
    AuditStatus,
    DamagedStoreError,
    read_status,
    verify_chain,
)
from telehealth_client.protocol import channels, messages
from telehealth_client.pubsub.pubnub_bus import PubNubBus
from telehealth_client.security.clinic_client import ClinicError
from telehealth_devstack.network import CuttableLink
from telehealth_devstack.stack import DevStack
from tests.support.audit import CountingClinic, Trails, as_recorded, kiosk_event, sink_events
from tests.support.audit_store import tamper
from tests.support.bus import Inbox, subscribed
from tests.support.consultation import DEPARTMENT, PROVIDER, bus_template

pytestmark = pytest.mark.integration

WAIT = 15.0


async def anchored(trails: Trails) -> None:
    """The store begun knowing the sink's head (a first start with the clinic up): one begun
    without it asks for the head, not posts, until it answers (test_audit_begun_offline)."""
    await (await trails.trail(trails.clinic())).aclose()


async def test_events_recorded_while_the_clinic_is_unreachable_reach_the_sink_once_when_it_returns(
    stack: DevStack, trails: Trails
) -> None:
    assert stack.clinic is not None
    await anchored(trails)
    async with CuttableLink(f"127.0.0.1:{stack.clinic.port}") as link:
        link.cut()
        sink = trails.clinic(f"http://{link.origin}")
        trail = await trails.trail(sink)
        events = [kiosk_event(number, stack.organization_id) for number in range(5)]
        for event in events:
            await trail.record(event)
        await sink.wait_failures(3)  # retried, not given up
        assert trail.status() == AuditStatus(
            records=5, awaiting_sink=5, awaiting_channel=5
        )  # none acknowledged
        assert await sink_events(stack) == []

        link.restore()
        assert await trail.wait_delivered(WAIT)

    stored = await sink_events(stack)
    assert [event["id"] for event in stored] == [event.id for event in events]
    assert stored == [as_recorded(event, number) for number, event in enumerate(events, start=1)]
    assert dict(sink.acknowledged) == {event.id: 1 for event in events}
    assert trail.status() == AuditStatus(records=5, awaiting_sink=0, awaiting_channel=5, acknowledged=5)


async def test_what_was_not_acknowledged_before_a_restart_is_delivered_after_it(
    stack: DevStack, trails: Trails
) -> None:
    events = await trails.record_offline()
    assert read_status(trails.state_dir) == AuditStatus(records=3, awaiting_sink=3, awaiting_channel=3)

    sink = trails.clinic()
    trail = await trails.trail(sink)
    later = kiosk_event(3, stack.organization_id)
    assert await trail.record(later) == 4
    assert await trail.wait_delivered(WAIT)
    assert [event["id"] for event in await sink_events(stack)] == [e.id for e in [*events, later]]
    await trail.aclose()
    assert read_status(trails.state_dir).awaiting_sink == 0
    assert verify_chain(trails.state_dir, trails.keys, trails.device_id).ok


async def test_a_permanent_refusal_is_kept_as_refused_and_delivery_goes_on(
    stack: DevStack, trails: Trails
) -> None:
    sink = trails.clinic()  # the kiosk's credential: it may not post a provider's events (403)
    trail = await trails.trail(sink)
    refused = kiosk_event(0, stack.organization_id, actor_id=PROVIDER, actor_role="provider")
    accepted = kiosk_event(1, stack.organization_id)
    await trail.record(refused)
    await trail.record(accepted)
    assert await trail.wait_delivered(WAIT)
    assert [event["id"] for event in await sink_events(stack)] == [accepted.id]
    # Sequence 1 was refused: the sink holds 2 above a gap, and it said so by storing it.
    assert trail.status() == AuditStatus(
        records=2, awaiting_sink=0, awaiting_channel=2, refused_sink=1, acknowledged=2
    )
    await trail.aclose()
    assert read_status(trails.state_dir).refused_sink == 1


async def provider_bus(stack: DevStack, trails: Trails) -> PubNubBus:
    """The provider's bus with its standing token: ``audit.{org}`` is write-only for it."""
    grant = await trails.clinic(user_id=PROVIDER).request_token(PROVIDER, "provider", departmentId=DEPARTMENT)
    bus = PubNubBus(replace(bus_template(stack, PROVIDER), token=grant.token))
    trails._closers.append(bus.aclose)
    return bus


async def audit_channel_reader(stack: DevStack, trails: Trails) -> Inbox:
    """What the organization's audit channel carries from now on. Nobody's token may read
    audit.{org}: the reader signs with the stack's secret key, as an admin."""
    reader = PubNubBus(replace(bus_template(stack, "audit-reader"), secret_key=stack.keys.secret_key))
    trails._closers.append(reader.aclose)
    inbox = Inbox()
    await subscribed(reader, channels.audit(stack.organization_id), inbox)
    return inbox


async def test_events_are_published_on_the_audit_channel_in_order(stack: DevStack, trails: Trails) -> None:
    inbox = await audit_channel_reader(stack, trails)

    sink = trails.clinic(user_id=PROVIDER)
    trail = await trails.trail(sink, user_id=PROVIDER)
    trail.attach_bus(await provider_bus(stack, trails))
    events = [
        kiosk_event(number, stack.organization_id, actor_id=PROVIDER, actor_role="provider")
        for number in range(4)
    ]
    for event in events:
        await trail.record(event)
    received = await inbox.wait_for(4, within=WAIT)
    assert [envelope.message for envelope in received] == [
        as_recorded(event, number, PROVIDER) for number, event in enumerate(events, start=1)
    ]
    assert {envelope.publisher for envelope in received} == {PROVIDER}
    assert await trail.wait_delivered(WAIT)
    assert trail.status() == AuditStatus(records=4, awaiting_sink=0, awaiting_channel=0, acknowledged=4)


async def test_after_the_bus_is_detached_events_wait_for_the_next_bus(
    stack: DevStack, trails: Trails
) -> None:
    inbox = await audit_channel_reader(stack, trails)

    sink = trails.clinic(user_id=PROVIDER)
    trail = await trails.trail(sink, user_id=PROVIDER)
    first_bus = await provider_bus(stack, trails)
    trail.attach_bus(first_bus)
    first = kiosk_event(0, stack.organization_id, actor_id=PROVIDER, actor_role="provider")
    await trail.record(first)
    await trail.detach_bus(within=WAIT)  # publishes what is pending before letting go
    assert trail.status().awaiting_channel == 0
    await trail.detach_bus()  # idempotent
    await first_bus.aclose()

    between = kiosk_event(1, stack.organization_id, actor_id=PROVIDER, actor_role="provider")
    await trail.record(between)
    assert await trail.wait_delivered(WAIT)  # the sink; no bus attached, so the channel waits
    assert trail.status().awaiting_channel == 1

    trail.attach_bus(await provider_bus(stack, trails))
    received = await inbox.wait_for(2, within=WAIT)
    assert [envelope.message["id"] for envelope in received] == [first.id, between.id]
    assert await trail.wait_delivered(WAIT)
    assert trail.status().awaiting_channel == 0


async def test_a_record_altered_into_unreadable_text_stops_the_start_and_nothing_is_delivered(
    stack: DevStack, trails: Trails
) -> None:
    await trails.record_offline()
    tamper(trails.state_dir, "UPDATE records SET event = 'not json' WHERE position = 2")

    trail = trails.unopened(trails.clinic())
    with pytest.raises(DamagedStoreError) as refused:
        await trail.open()
    assert refused.value.problem == (
        "record 2: content does not match its hash (edited, or written without this device's key)"
    )
    assert await sink_events(stack) == []
    assert verify_chain(trails.state_dir, trails.keys, trails.device_id).first_broken == 2


class SwappedCredential:
    """A kiosk whose device credential is being replaced: the clinic answers 401 to the old one
    (a real answer of the real clinic) until the new one is in place."""

    def __init__(self, old: CountingClinic, new: CountingClinic) -> None:
        self.current = old
        self._new = new

    def swap(self) -> None:
        self.current = self._new

    async def post_audit_event(self, event: Mapping[str, Any]) -> Any:
        return await self.current.post_audit_event(event)

    async def audit_head(self, device_id: str) -> Any:
        return await self.current.audit_head(device_id)


async def test_a_401_from_the_sink_during_a_credential_swap_is_retried_not_refused(
    stack: DevStack, trails: Trails
) -> None:
    assert stack.clinic is not None
    await anchored(trails)
    old = CountingClinic(stack.clinic.url, "credential-being-replaced", timeout_seconds=5.0)
    trails._closers.append(old.aclose)
    sink = SwappedCredential(old, trails.clinic())
    trail = await trails.trail(sink)
    events = [kiosk_event(number, stack.organization_id) for number in range(3)]
    for event in events:
        await trail.record(event)
    await old.wait_failures(3)  # 401 each time: retried, not settled as refused
    with pytest.raises(ClinicError) as answered:
        await old.post_audit_event(messages.encode(events[0]))
    assert answered.value.status == 401
    assert trail.status() == AuditStatus(records=3, awaiting_sink=3, awaiting_channel=3)

    sink.swap()
    assert await trail.wait_delivered(WAIT)
    assert [event["id"] for event in await sink_events(stack)] == [event.id for event in events]
    assert trail.status() == AuditStatus(
        records=3, awaiting_sink=0, awaiting_channel=3, refused_sink=0, acknowledged=3
    )


async def test_the_store_writes_each_record_power_safe(stack: DevStack, trails: Trails) -> None:
    """A record the trail reported as stored survives a power cut: WAL with synchronous=FULL on the
    connection that writes (NORMAL would pass every other test and lose the last records)."""
    trail = await trails.trail(sink=None)
    await trail.record(kiosk_event(0, stack.organization_id))
    durability = await trail.durability()
    assert (durability.journal_mode, durability.synchronous) == ("wal", "FULL")
    assert durability.power_safe
