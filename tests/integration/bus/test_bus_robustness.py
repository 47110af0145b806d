"""Bus behaviour found wanting in review: cancellation, stored garbage, signals, stale cursors, PHI."""

from __future__ import annotations

import asyncio
import logging

import pytest
from pydantic import BaseModel

from telehealth_client.pubsub.bus import BusError, ConnectionStatus, Envelope
from telehealth_devstack.relay import Relay
from telehealth_devstack.relay.client import sdk_client
from tests.support.bus import BusFactory, Inbox, StatusLog, subscribed

CHANNEL = "consultation.dr-smith.patient-abc123"
MARKER = "MARKER-DOB-1961-04-12"


async def test_close_finishes_while_a_handler_waits_on_a_stalled_publish(
    make_bus: BusFactory, relay: Relay
) -> None:
    kiosk, provider = make_bus("patient-abc123"), make_bus("dr-smith")
    handler_started = asyncio.Event()

    async def reply(envelope: Envelope) -> None:
        handler_started.set()
        await kiosk.publish(CHANNEL, {"type": "chat", "text": "reply"})

    statuses = StatusLog(kiosk)
    await kiosk.subscribe([CHANNEL], reply)
    await statuses.wait_for(ConnectionStatus.CONNECTED)
    await provider.publish(CHANNEL, {"type": "chat", "text": "hello"})
    await asyncio.wait_for(handler_started.wait(), 10)
    relay.stall()  # the reply's publish now hangs
    try:
        await asyncio.wait_for(kiosk.aclose(), 10)
    finally:
        relay.resume()
    assert kiosk.status == ConnectionStatus.STOPPED


async def test_a_cancelled_publish_raises_cancelled_not_a_bus_error(
    make_bus: BusFactory, relay: Relay
) -> None:
    bus = make_bus("dr-smith")
    relay.stall()
    try:
        publishing = asyncio.create_task(bus.publish(CHANNEL, {"n": 1}))
        await asyncio.sleep(0)  # let the task start its request (it then hangs in the stalled relay)
        publishing.cancel()
        with pytest.raises(asyncio.CancelledError):
            await publishing
    finally:
        relay.resume()


async def test_a_handler_cancelled_from_elsewhere_does_not_stop_delivery(make_bus: BusFactory) -> None:
    kiosk, provider = make_bus("patient-abc123"), make_bus("dr-smith")
    inbox = Inbox()

    async def handler(envelope: Envelope) -> None:
        if envelope.message.get("cancel"):
            never = asyncio.get_running_loop().create_future()
            never.cancel()
            await never  # raises CancelledError inside the handler
        await inbox(envelope)

    statuses = StatusLog(kiosk)
    await kiosk.subscribe([CHANNEL], handler)
    await statuses.wait_for(ConnectionStatus.CONNECTED)
    await provider.publish(CHANNEL, {"cancel": True})
    await provider.publish(CHANNEL, {"cancel": False, "n": 2})
    [envelope] = await inbox.wait_for(1)
    assert envelope.message["n"] == 2


async def test_history_skips_a_stored_clear_text_message_and_keeps_the_rest(
    make_bus: BusFactory, caplog: pytest.LogCaptureFixture
) -> None:
    provider = make_bus("dr-smith")
    intruder = make_bus("intruder", cipher_key=None)
    first = await provider.publish(CHANNEL, {"n": 1})
    await intruder.publish(CHANNEL, {"type": "chat", "text": "clear text in storage"})
    await provider.publish(CHANNEL, {"n": 2})
    caplog.set_level(logging.WARNING, logger="telehealth_client.pubsub.pubnub_bus")
    history = await provider.history(CHANNEL)
    assert [env.message for env in history] == [{"n": 1}, {"n": 2}]
    assert [env.message for env in await provider.history(CHANNEL, since=first.timetoken)] == [{"n": 2}]
    assert "history message dropped" in caplog.text


async def test_a_clear_text_signal_is_not_delivered_as_a_message(make_bus: BusFactory, relay: Relay) -> None:
    kiosk, provider = make_bus("patient-abc123"), make_bus("dr-smith")
    inbox = Inbox()
    await subscribed(kiosk, CHANNEL, inbox)
    forger = sdk_client(relay, user_id="intruder", enable_subscribe=False)
    try:
        envelope = await forger.signal().channel(CHANNEL).message({"type": "chat", "text": "forged"}).future()
        assert not envelope.is_error()
    finally:
        await forger.stop()
    await provider.publish(CHANNEL, {"type": "chat", "text": "real"})
    received = await inbox.wait_for(1)
    assert [env.message["text"] for env in received] == ["real"]


async def test_subscribing_again_after_idle_does_not_replay_old_messages(make_bus: BusFactory) -> None:
    kiosk, provider = make_bus("patient-abc123"), make_bus("dr-smith")
    first_inbox = Inbox()
    statuses = StatusLog(kiosk)
    subscription = await kiosk.subscribe([CHANNEL], first_inbox)
    await statuses.wait_for(ConnectionStatus.CONNECTED)
    await provider.publish(CHANNEL, {"n": 1})
    await first_inbox.wait_for(1)
    await subscription.close()
    await statuses.wait_for(ConnectionStatus.IDLE)
    for n in (2, 3):  # published while nobody listens: history, not live delivery
        await provider.publish(CHANNEL, {"n": n})
    later = Inbox()
    await kiosk.subscribe([CHANNEL], later)
    await statuses.wait_for(ConnectionStatus.CONNECTED)
    await provider.publish(CHANNEL, {"n": 4})
    received = await later.wait_for(1)
    assert [env.message["n"] for env in received] == [4]


async def test_a_failing_handler_logs_no_phi(make_bus: BusFactory, caplog: pytest.LogCaptureFixture) -> None:
    class Chat(BaseModel):
        text: int  # wrong on purpose: validation fails and pydantic repeats the input

    kiosk, provider = make_bus("patient-abc123"), make_bus("dr-smith")
    inbox = Inbox()

    async def handler(envelope: Envelope) -> None:
        await inbox(envelope)
        Chat.model_validate(envelope.message)

    caplog.set_level(logging.DEBUG)
    statuses = StatusLog(kiosk)
    await kiosk.subscribe([CHANNEL], handler)
    await statuses.wait_for(ConnectionStatus.CONNECTED)
    await provider.publish(CHANNEL, {"text": MARKER})
    await provider.publish(CHANNEL, {"text": 7})
    await inbox.wait_for(2)
    failures = [r for r in caplog.records if "bus handler failed" in r.getMessage()]
    assert failures, "the failure is logged"
    assert "ValidationError at " in failures[0].getMessage()
    assert MARKER not in caplog.text


async def test_the_size_limit_counts_the_ciphertext(make_bus: BusFactory) -> None:
    bus = make_bus("dr-smith")
    # 28 KB of clear text is under 32 KiB, but not once encrypted and base64-encoded.
    with pytest.raises(BusError, match="over 32768"):
        await bus.publish(CHANNEL, {"text": "x" * 28_000})
    plain = make_bus("dr-smith-plain", cipher_key=None)
    await plain.publish(CHANNEL, {"text": "x" * 28_000})
