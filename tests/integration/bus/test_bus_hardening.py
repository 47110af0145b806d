"""Issue 11: no message stops the bus, the bus never lies about its state, publish limits are real."""

from __future__ import annotations

import asyncio
import json
import logging
from base64 import b64encode
from collections.abc import AsyncIterator

import pytest

from telehealth_client.pubsub.bus import BusError, ConnectionStatus, Envelope, PresenceEvent
from telehealth_client.pubsub.crypto import RotatingCryptoModule
from telehealth_client.pubsub.pubnub_bus import MAX_CHANNELS_PER_SUBSCRIBE
from telehealth_devstack.relay import Relay
from tests.support.bus import CIPHER_KEY, BusFactory, Inbox, StatusLog, grant, subscribed
from tests.support.tap import Tap

CHANNEL = "consultation.dr-smith.patient-abc123"
CRYPTO = RotatingCryptoModule(CIPHER_KEY)


def nested(levels: int) -> list[object]:
    value: list[object] = []
    for _ in range(levels):
        value = [value]
    return value


@pytest.fixture
async def tap(relay: Relay) -> AsyncIterator[Tap]:
    # Request it before make_bus: the buses are closed before the tap goes away.
    async with Tap(relay) as running:
        yield running


async def test_deep_json_and_infinite_occupancy_do_not_stop_the_bus(
    make_bus: BusFactory, relay: Relay, caplog: pytest.LogCaptureFixture
) -> None:
    kiosk, provider = make_bus("patient-abc123"), make_bus("dr-smith")
    inbox = Inbox()
    presence: asyncio.Queue[PresenceEvent] = asyncio.Queue()
    statuses = StatusLog(kiosk)
    await kiosk.subscribe([CHANNEL], inbox, on_presence=presence.put)
    await statuses.wait_for(ConnectionStatus.CONNECTED)
    caplog.set_level(logging.WARNING, logger="telehealth_client.pubsub.pubnub_bus")
    relay.inject_event(CHANNEL, 0, CRYPTO.encrypt("[" * 6000 + "]" * 6000))
    relay.inject_event(CHANNEL + "-pnpres", 0, {"action": "join", "uuid": "x", "occupancy": float("inf")})
    await provider.publish(CHANNEL, {"type": "chat", "text": "after the bombs"})
    [envelope] = await inbox.wait_for(1)
    assert envelope.message["text"] == "after the bombs"
    assert kiosk.status == ConnectionStatus.CONNECTED
    assert "deeper than 64 levels" in caplog.text
    # The presence event is delivered with an unknown occupancy rather than killing the loop.
    while (event := await asyncio.wait_for(presence.get(), 10)).user_id != "x":
        pass
    assert event.occupancy is None


async def test_history_drops_forged_pned_strings_and_deep_json(make_bus: BusFactory) -> None:
    provider = make_bus("dr-smith")
    intruder = make_bus("intruder", cipher_key=None)
    forged = [
        b64encode(b"PNED\x01\xff\xfe\xfd\xfc\x10" + b"0" * 32).decode(),  # cryptor id not UTF-8
        b64encode(b"PNED\x01ACRH\x0501234" + b"0" * 16).decode(),  # 5-byte IV
        CRYPTO.encrypt("[" * 6000 + "]" * 6000),  # real ciphertext of JSON nested too deep
    ]
    for text in forged:
        await intruder.publish(CHANNEL, text)
    await provider.publish(CHANNEL, {"n": 1})
    assert [env.message for env in await provider.history(CHANNEL)] == [{"n": 1}]


async def test_connected_within_2_s_of_the_relays_return_on_a_quiet_channel_with_a_heartbeat(
    tap: Tap, make_bus: BusFactory, relay: Relay
) -> None:
    kiosk = make_bus("patient-abc123", origin=tap.origin)
    statuses = await subscribed(kiosk, CHANNEL, Inbox())
    await relay.stop()
    await statuses.wait_for(ConnectionStatus.RECONNECTING)
    heartbeats_before, mark = tap.heartbeats, len(statuses.changes)
    await relay.start()
    await statuses.wait_for(ConnectionStatus.CONNECTED, within=2.0, after=mark)
    await asyncio.wait_for(tap.wait_for_heartbeats(heartbeats_before + 1), 2.0)


async def test_a_new_token_reconnects_at_once_on_a_quiet_channel(make_bus: BusFactory, relay: Relay) -> None:
    # A back-off of a minute: only the new token itself can make the bus try again in time.
    kiosk = make_bus("patient-abc123", reconnect_min_seconds=60.0, reconnect_max_seconds=60.0)
    statuses = await subscribed(kiosk, CHANNEL, Inbox())
    relay.enforce_access = True
    relay.drop_subscribers()
    await statuses.wait_for(ConnectionStatus.ACCESS_DENIED)
    token, mark = await grant(relay, "patient-abc123", CHANNEL), len(statuses.changes)
    kiosk.set_token(token)
    await statuses.wait_for(ConnectionStatus.CONNECTED, within=2.0, after=mark)


async def test_the_back_off_starts_again_after_a_reconnection(make_bus: BusFactory, relay: Relay) -> None:
    kiosk = make_bus("patient-abc123")
    statuses = await subscribed(kiosk, CHANNEL, Inbox())
    await asyncio.wait_for(relay.wait_for_subscribers(1), 10)
    relay.fail_next(3, status=503)
    relay.drop_subscribers()
    first_outage = await statuses.wait_for(ConnectionStatus.RECONNECTING)
    await statuses.wait_for(ConnectionStatus.CONNECTED, after=statuses.changes.index(first_outage))
    await asyncio.wait_for(relay.wait_for_subscribers(1), 10)  # the resumed long-poll, to be cut
    # aiohttp retries a cut request once by itself, and a heartbeat may come first: fail those too.
    relay.fail_next(5, status=503)
    mark = len(statuses.changes)
    relay.drop_subscribers()
    second_outage = await statuses.wait_for(ConnectionStatus.RECONNECTING, after=mark)
    assert second_outage.failures == 1


async def test_a_redelivered_answer_is_handled_once(tap: Tap, make_bus: BusFactory) -> None:
    kiosk, provider = make_bus("patient-abc123", origin=tap.origin), make_bus("dr-smith")
    inbox = Inbox()
    await subscribed(kiosk, CHANNEL, inbox)
    for n in (1, 2):
        await provider.publish(CHANNEL, {"n": n})
        await inbox.wait_for(n)
    tap.replay_next_poll()  # the poll after the next answer gets the answer that carried n=2 again
    await provider.publish(CHANNEL, {"n": 3})
    await inbox.wait_for(3)
    await provider.publish(CHANNEL, {"n": 4})
    received = await inbox.wait_for(4)
    assert [env.message["n"] for env in received] == [1, 2, 3, 4]


async def test_a_subscription_closed_while_its_entry_is_queued_gets_nothing(make_bus: BusFactory) -> None:
    kiosk, provider = make_bus("patient-abc123"), make_bus("dr-smith")
    closing = Inbox()
    kept = Inbox()
    later: list[object] = []

    async def close_the_other(envelope: Envelope) -> None:
        # Runs first for each entry: the entry is already queued for `closed` too.
        later.append(envelope.message)
        await closed.close()
        await kept(envelope)

    statuses = StatusLog(kiosk)
    await kiosk.subscribe([CHANNEL], close_the_other)
    closed = await kiosk.subscribe([CHANNEL], closing)
    await statuses.wait_for(ConnectionStatus.CONNECTED)
    await provider.publish(CHANNEL, {"n": 1})
    await provider.publish(CHANNEL, {"n": 2})
    await kept.wait_for(2)
    assert closing.items == []


async def test_a_loop_that_ends_is_reported_not_hidden(make_bus: BusFactory) -> None:
    class Fatal(BaseException):
        """Not an Exception: nothing in the bus catches it, so the dispatch loop ends."""

    kiosk, provider = make_bus("patient-abc123"), make_bus("dr-smith")

    async def fatal(envelope: Envelope) -> None:
        raise Fatal

    statuses = StatusLog(kiosk)
    await kiosk.subscribe([CHANNEL], fatal)
    await statuses.wait_for(ConnectionStatus.CONNECTED)
    await provider.publish(CHANNEL, {"n": 1})
    failed = await statuses.wait_for(ConnectionStatus.FAILED)
    assert failed.reason is not None and failed.reason.startswith("bus-dispatch ended: Fatal at ")
    await provider.publish(CHANNEL, {"n": 2})  # the subscribe loop still answers: the status stays failed
    assert kiosk.status == ConnectionStatus.FAILED


async def test_publish_measures_what_the_sdk_sends(make_bus: BusFactory, relay: Relay) -> None:
    bus = make_bus("dr-smith")
    # Compact, 24 kB; as the SDK writes it (", " separators) and encrypts it, over 32 KiB.
    with pytest.raises(BusError, match="over 32768"):
        await bus.publish(CHANNEL, [0] * 12_000)
    plain = make_bus("dr-smith-plain", cipher_key=None)
    overhead = len(json.dumps({"t": ""})) + len(CHANNEL)
    exactly = {"t": "x" * (32 * 1024 - overhead)}
    await plain.publish(CHANNEL, exactly)  # the relay takes exactly the limit ...
    with pytest.raises(BusError, match="over 32768"):  # ... and the bus refuses one byte more
        await plain.publish(CHANNEL, {"t": exactly["t"] + "x"})
    assert len(relay.stored_messages(CHANNEL)) == 1


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        ({"n": float("nan")}, "not finite"),
        ({"n": float("inf")}, "not finite"),
        ([-float("inf")], "not finite"),
        (nested(6000), "deeper than 64 levels"),
    ],
)
async def test_publish_refuses_non_finite_numbers_and_deep_structures(
    make_bus: BusFactory, relay: Relay, message: object, reason: str
) -> None:
    bus = make_bus("dr-smith")
    with pytest.raises(BusError, match=reason) as refused:
        await bus.publish(CHANNEL, message)
    assert not refused.value.retryable
    with pytest.raises(BusError, match=reason):
        await bus.publish(CHANNEL, {"ok": 1}, meta={"m": message})
    assert relay.stored_messages(CHANNEL) == []


async def test_too_many_channels_are_refused_at_subscribe(make_bus: BusFactory) -> None:
    bus = make_bus("dr-smith")
    names = [f"queue.dept-{n}" for n in range(60)]
    with pytest.raises(BusError, match=f"120 channels .* limit of {MAX_CHANNELS_PER_SUBSCRIBE}"):
        await bus.subscribe(names, Inbox(), with_presence=True)
    with pytest.raises(BusError, match="101 channels"):
        await bus.subscribe([*names, *(f"other.{n}" for n in range(41))], Inbox())
    assert bus.status == ConnectionStatus.IDLE  # nothing was subscribed
    statuses = StatusLog(bus)
    await bus.subscribe(names[:50], Inbox(), with_presence=True)  # 100: allowed
    await statuses.wait_for(ConnectionStatus.CONNECTED)
    with pytest.raises(BusError, match="101 channels"):
        await bus.subscribe(["one.more"], Inbox())


@pytest.mark.parametrize(("status", "retryable"), [(400, False), (404, False), (429, True), (503, True)])
async def test_a_refusal_is_final_and_an_overload_retryable(
    make_bus: BusFactory, relay: Relay, status: int, retryable: bool
) -> None:
    bus = make_bus("dr-smith")
    relay.fail_next(1, status=status)
    with pytest.raises(BusError) as failed:
        await bus.publish(CHANNEL, {"n": 1})
    assert (failed.value.status_code, failed.value.retryable) == (status, retryable)
