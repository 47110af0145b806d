"""Regression (found by the API's fuzz run): a stream resumed from an ID this run never gave (a
made-up ``Last-Event-ID``, read as -1) while the event ring is still empty waits for the first
event instead of spinning on the agent's event loop."""

from __future__ import annotations

from telehealth_client.api.events_stream import EventRing
from telehealth_client.events import EventHub
from telehealth_client.events.catalogue import QueueUpdated


async def test_an_empty_ring_holds_nothing_after_an_id_from_before_this_run() -> None:
    hub = EventHub()
    ring = EventRing(hub)
    ring.start()
    assert ring.since(-1) == (0, [])
    assert not await ring.wait_after(-1, 0.05)  # waited (timed out): nothing is held
    hub.emit(QueueUpdated("consultation.dr-a.pat-1", 1, 5))
    assert await ring.wait_after(-1, 5.0)  # the first event wakes it
    assert [entry.id for entry in ring.since(-1)[1]] == [ring.first_id]
    await ring.aclose()
