"""Handlers that fail, are cancelled from elsewhere, or never finish: logged with their channel, and
never able to stop delivery or the bus's close."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from telehealth_client.pubsub.bus import Envelope
from tests.support.bus import BusFactory, Inbox, subscribed
from tests.support.logs import LogLines, attached

CHANNEL = "consultation.dr-smith.patient-abc123"


@pytest.fixture
def bus_log() -> Iterator[LogLines]:
    with attached(LogLines(), "telehealth_client.pubsub.pubnub_bus") as handler:
        yield handler


def running_bus_loops() -> list[str]:
    return sorted(
        t.get_name() for t in asyncio.all_tasks() if t.get_name().startswith("bus-") and not t.done()
    )


async def test_closing_while_a_handler_never_finishes_stops_every_loop(
    make_bus: BusFactory, bus_log: LogLines
) -> None:
    kiosk, provider = make_bus("patient-abc123"), make_bus("dr-smith")
    entered = asyncio.Event()

    async def stuck(envelope: Envelope) -> None:
        entered.set()
        await asyncio.Event().wait()  # never set: only the bus's close ends it

    await subscribed(kiosk, CHANNEL, Inbox())
    await kiosk.subscribe([CHANNEL], stuck)
    await provider.publish(CHANNEL, {"n": 1})
    await asyncio.wait_for(entered.wait(), 10)
    await kiosk.aclose()
    assert running_bus_loops() == []
    assert not [
        line for line in bus_log.lines if "did not stop in time" in line or "handler cancelled" in line
    ]


async def test_handlers_that_fail_or_are_cancelled_elsewhere_are_logged_with_their_channel(
    make_bus: BusFactory, bus_log: LogLines
) -> None:
    kiosk, provider = make_bus("patient-abc123"), make_bus("dr-smith")
    later = Inbox()
    waiting: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def handler(envelope: Envelope) -> None:
        if envelope.message["n"] == 1:
            raise RuntimeError("handler bug")
        if envelope.message["n"] == 2:
            await waiting  # cancelled by someone else
        await later(envelope)

    await subscribed(kiosk, CHANNEL, Inbox())
    await kiosk.subscribe([CHANNEL], handler)
    await provider.publish(CHANNEL, {"n": 1})
    await provider.publish(CHANNEL, {"n": 2})
    await bus_log.wait_for(lambda line: line.startswith("bus handler failed "))
    waiting.cancel()  # before or after the handler awaits it, the handler sees it cancelled
    await provider.publish(CHANNEL, {"n": 3})
    assert [env.message["n"] for env in await later.wait_for(1)] == [3]
    failed = [line for line in bus_log.lines if line.startswith("bus handler ")]
    assert failed[0].startswith(
        f"bus handler failed channel={CHANNEL} error=RuntimeError at test_bus_handlers.py:"
    )
    assert failed[1].startswith(f"bus handler cancelled channel={CHANNEL} error=CancelledError")
