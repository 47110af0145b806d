"""A covered subscription (routed, not listed: an open wildcard brings its channel) on the real
relay and SDK: refused with its reason when nothing brings it, else it gets exactly its own
channel's messages while the wildcard lists it."""

from __future__ import annotations

import pytest

from telehealth_client.pubsub.bus import BusError
from tests.support.bus import BusFactory, Inbox, subscribed

WILDCARD = "consultation.dr-lee.*"


async def test_a_covered_subscription_nothing_brings_is_refused_with_its_reason(make_bus: BusFactory) -> None:
    bus = make_bus("dr-lee")
    with pytest.raises(BusError) as refused:
        await bus.subscribe(["consultation.dr-lee.pat-1"], Inbox(), covered=True)
    assert refused.value.retryable is False
    assert "not brought by an open wildcard subscription" in refused.value.reason
    await subscribed(bus, WILDCARD, Inbox())
    with pytest.raises(BusError):  # a wildcard never brings a four-segment channel
        await bus.subscribe(["consultation.dr-lee.pat-1.video"], Inbox(), covered=True)
    with pytest.raises(BusError):  # nor another provider's consultations
        await bus.subscribe(["consultation.dr-other.pat-1"], Inbox(), covered=True)


async def test_a_covered_subscription_gets_its_own_channel_through_the_wildcard(make_bus: BusFactory) -> None:
    bus, sender = make_bus("dr-lee"), make_bus("pat-1")
    everything = Inbox()
    await subscribed(bus, WILDCARD, everything)
    mine = Inbox()
    await bus.subscribe(["consultation.dr-lee.pat-1"], mine, covered=True)
    await sender.publish("consultation.dr-lee.pat-2", {"n": 1})  # the wildcard's, not this one's
    await sender.publish("consultation.dr-lee.pat-1", {"n": 2})
    [seen] = await mine.wait_for(1)
    assert (seen.channel, seen.message) == ("consultation.dr-lee.pat-1", {"n": 2})
    assert [e.message for e in await everything.wait_for(2)] == [{"n": 1}, {"n": 2}]
    assert [e.message for e in mine.items] == [{"n": 2}]
