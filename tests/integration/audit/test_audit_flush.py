"""``AuditTrail.flush``, a stop's last deliveries (issue 24), against the clinic stand-in's audit
sink: it waits for the sink to hold everything recorded; with the sink unreachable it gives up at
its first failed attempt, not at the end of its time, and what was not delivered stays pending."""

from __future__ import annotations

import time

import pytest

from telehealth_devstack.network import CuttableLink
from telehealth_devstack.stack import DevStack
from tests.support.audit import Trails, kiosk_event, sink_events

pytestmark = pytest.mark.integration

WAIT = 15.0


async def test_flush_returns_once_the_sink_holds_everything_recorded(stack: DevStack, trails: Trails) -> None:
    trail = await trails.trail(trails.clinic())
    events = [kiosk_event(number, stack.organization_id) for number in range(5)]
    for event in events:
        await trail.record(event)
    assert await trail.flush("sink", WAIT)
    assert trail.status().awaiting_sink == 0
    assert [event["id"] for event in await sink_events(stack)] == [event.id for event in events]


async def test_flush_gives_up_at_the_sinks_first_failure_and_keeps_what_waits(
    stack: DevStack, trails: Trails
) -> None:
    assert stack.clinic is not None
    # Begun knowing the sink's head (a first start with the clinic up): it then posts, not asks.
    await (await trails.trail(trails.clinic())).aclose()
    async with CuttableLink(f"127.0.0.1:{stack.clinic.port}") as link:
        link.cut()  # the clinic refuses connections
        sink = trails.clinic(f"http://{link.origin}")
        trail = await trails.trail(sink)
        for number in range(3):
            await trail.record(kiosk_event(number, stack.organization_id))
        await sink.wait_failures(1)

        began = time.monotonic()
        assert not await trail.flush("sink", WAIT)
        took = time.monotonic() - began
        assert took < WAIT / 3, took  # a failed attempt ended it, not its time
        assert trail.status().awaiting_sink == 3

        link.restore()
        assert await trail.flush("sink", WAIT)  # the same wait, the sink back: everything goes
    assert trail.status().awaiting_sink == 0


async def test_flush_without_a_sink_returns_at_once(stack: DevStack, trails: Trails) -> None:
    trail = await trails.trail(None)
    await trail.record(kiosk_event(0, stack.organization_id))
    began = time.monotonic()
    assert not await trail.flush("sink", WAIT)  # nothing delivers to it: nothing to wait for
    assert time.monotonic() - began < WAIT / 3
    assert trail.status().awaiting_sink == 1
