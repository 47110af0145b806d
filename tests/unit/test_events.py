import asyncio
from datetime import UTC, datetime

import pytest

from telehealth_client.events import (
    AccessDenied,
    BusStatusChanged,
    Event,
    EventHub,
    Missed,
    StateChanged,
    TokenExpiring,
)
from telehealth_client.protocol.messages import ConsultationState as S
from telehealth_client.pubsub.bus import ConnectionStatus

CID = "consultation.dr-lee.pt-1"


def state(n: int) -> StateChanged:
    return StateChanged(CID, S.WAITING, S.WAITING, n)


async def take(subscription: object, count: int) -> list[Event]:
    got: list[Event] = []
    async with asyncio.timeout(5):
        async for event in subscription:  # type: ignore[attr-defined]
            got.append(event)
            if len(got) == count:
                break
    return got


async def test_every_subscriber_gets_every_event_in_order() -> None:
    hub = EventHub()
    first, second = hub.subscribe(), hub.subscribe()
    sent: list[Event] = [
        state(1),
        TokenExpiring(datetime(2026, 1, 1, tzinfo=UTC)),
        AccessDenied("publish"),
        BusStatusChanged(ConnectionStatus.CONNECTED),
    ]
    for event in sent:
        hub.emit(event)
    assert await take(first, 4) == sent
    assert await take(second, 4) == sent


async def test_a_waiting_subscriber_wakes_up_on_emit() -> None:
    hub = EventHub()
    subscription = hub.subscribe()
    waiter = asyncio.create_task(take(subscription, 1))
    await asyncio.sleep(0)  # let the waiter block on an empty buffer (a yield, not a timing guess)
    assert not waiter.done()
    hub.emit(state(7))
    assert await waiter == [state(7)]


async def test_a_slow_subscriber_loses_the_oldest_and_is_told_how_many() -> None:
    hub = EventHub()
    slow = hub.subscribe(max_pending=3)
    fast = hub.subscribe(max_pending=100)
    for n in range(10):
        hub.emit(state(n))  # synchronous: returns although nobody reads
    assert await take(slow, 4) == [Missed(7), state(7), state(8), state(9)]
    assert await take(fast, 10) == [state(n) for n in range(10)]
    hub.emit(state(10))
    assert await take(slow, 1) == [state(10)]  # caught up: no further Missed


async def test_close_ends_every_subscription_after_what_it_holds() -> None:
    hub = EventHub()
    holding = hub.subscribe()
    hub.emit(state(1))
    # Subscribed after the emit: it holds nothing and blocks until close() ends it.
    waiter = asyncio.create_task(take(hub.subscribe(), 5))
    await asyncio.sleep(0)
    assert not waiter.done()
    hub.close()
    assert await take(holding, 5) == [state(1)]
    assert await waiter == []
    hub.emit(state(2))  # ignored after close
    late = hub.subscribe()
    assert late.closed and await take(late, 1) == []
    assert hub.subscriber_count == 0


async def test_a_closed_subscription_gets_nothing_more_and_others_go_on() -> None:
    hub = EventHub()
    leaving, staying = hub.subscribe(), hub.subscribe()
    async with leaving:
        hub.emit(state(1))
    assert hub.subscriber_count == 1
    hub.emit(state(2))
    assert await take(leaving, 5) == []
    assert await take(staying, 2) == [state(1), state(2)]


def test_max_pending_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_pending"):
        EventHub().subscribe(max_pending=0)


def test_every_event_has_a_stream_kind() -> None:
    kinds = {cls.kind for cls in (StateChanged, Missed, AccessDenied, TokenExpiring, BusStatusChanged)}
    assert len(kinds) == 5
