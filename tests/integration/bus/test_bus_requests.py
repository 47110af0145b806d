"""One-shot requests on the real SDK and relay: what they send, and the exact error each failure raises."""

from __future__ import annotations

import pytest

from telehealth_client.pubsub.bus import AccessDeniedError, BusError, ConnectionStatus
from telehealth_client.pubsub.pubnub_bus import publish_size
from telehealth_devstack.relay import Relay
from tests.support.bus import BusFactory, Inbox, subscribed

CHANNEL = "consultation.dr-smith.patient-abc123"


async def test_metadata_is_written_and_read_for_the_user_named(make_bus: BusFactory) -> None:
    provider = make_bus("dr-smith")
    await provider.set_user_metadata("patient-abc123", {"consent_telehealth": "granted"})
    assert await provider.get_user_metadata("patient-abc123") == {"consent_telehealth": "granted"}
    assert await provider.get_user_metadata("dr-smith") == {}  # not written to the caller


@pytest.mark.parametrize(
    ("status", "reason"), [(503, "network or server error (HTTP 503)"), (400, "request refused (HTTP 400)")]
)
async def test_metadata_failures_name_the_request(
    make_bus: BusFactory, relay: Relay, status: int, reason: str
) -> None:
    bus = make_bus("dr-smith")
    relay.fail_next(1, status=status)
    with pytest.raises(BusError) as failed:
        await bus.get_user_metadata("patient-abc123")
    assert str(failed.value) == f"get user metadata: {reason}"
    relay.fail_next(1, status=status)
    with pytest.raises(BusError) as failed:
        await bus.set_user_metadata("patient-abc123", {"a": "b"})
    assert str(failed.value) == f"set user metadata: {reason}"
    assert await bus.get_user_metadata("patient-abc123") == {}  # nothing was written


async def test_a_user_the_backend_does_not_know_has_no_metadata(make_bus: BusFactory, relay: Relay) -> None:
    bus = make_bus("dr-smith")
    relay.fail_next(1, status=404)
    assert await bus.get_user_metadata("patient-abc123") == {}
    relay.fail_next(1, status=403)
    with pytest.raises(AccessDeniedError, match=r"^get user metadata: "):
        await bus.get_user_metadata("patient-abc123")


async def test_publish_and_history_failures_name_the_request(make_bus: BusFactory, relay: Relay) -> None:
    bus = make_bus("dr-smith")
    relay.fail_next(1, status=503)
    with pytest.raises(BusError) as failed:
        await bus.publish(CHANNEL, {"n": 1})
    assert str(failed.value) == "publish: network or server error (HTTP 503)"
    relay.fail_next(1, status=503)
    with pytest.raises(BusError) as failed:
        await bus.history(CHANNEL)
    assert str(failed.value) == "history: network or server error (HTTP 503)"
    assert relay.stored_messages(CHANNEL) == []


async def test_refused_messages_and_meta_say_why_and_are_not_retryable(
    make_bus: BusFactory, relay: Relay
) -> None:
    bus = make_bus("dr-smith")
    too_big = {"text": "x" * 40_000}
    size = publish_size(CHANNEL, too_big, encrypted=True)
    refusals = [
        (too_big, None, f"publish: message is {size} bytes, over 32768"),
        ({"when": object()}, None, "publish: message is not JSON-serialisable"),
        ({"n": 1}, {"when": object()}, "publish: meta is not JSON-serialisable"),
        ({"n": 1}, {"n": float("nan")}, "publish: meta refused: JSON number is not finite"),
    ]
    for message, meta, text in refusals:
        with pytest.raises(BusError) as refused:
            await bus.publish(CHANNEL, message, meta=meta)
        assert (str(refused.value), refused.value.retryable) == (text, False)
    assert relay.stored_messages(CHANNEL) == []


async def test_the_meta_and_the_store_flag_reach_the_receiver_and_history(make_bus: BusFactory) -> None:
    kiosk, provider = make_bus("patient-abc123"), make_bus("dr-smith")
    inbox = Inbox()
    await subscribed(kiosk, CHANNEL, inbox)
    await provider.publish(CHANNEL, {"n": 1}, meta={"kind": "chat"})
    await provider.publish(CHANNEL, {"n": 2}, store=False)
    received = await inbox.wait_for(2)
    assert [(env.message, env.meta) for env in received] == [({"n": 1}, {"kind": "chat"}), ({"n": 2}, None)]
    [stored] = await provider.history(CHANNEL)
    assert (stored.channel, stored.message, stored.meta) == (CHANNEL, {"n": 1}, {"kind": "chat"})
    assert stored.publisher == "dr-smith"
    assert kiosk.status == ConnectionStatus.CONNECTED


async def test_a_user_with_metadata_but_no_custom_fields_has_none(make_bus: BusFactory) -> None:
    bus = make_bus("dr-smith")
    # Written by another App Context client: a name, no custom fields.
    envelope = await bus.pubnub.set_uuid_metadata(uuid="patient-abc123", name="Kiosk 4").future()
    assert not envelope.is_error()
    assert await bus.get_user_metadata("patient-abc123") == {}


async def test_history_since_includes_the_message_right_after_it(make_bus: BusFactory) -> None:
    provider = make_bus("dr-smith")
    sent = [await provider.publish(CHANNEL, {"n": n}) for n in range(3)]
    since = await provider.history(CHANNEL, since=sent[1].timetoken - 1)
    assert [env.message["n"] for env in since] == [1, 2]
    assert await provider.history(CHANNEL, since=sent[2].timetoken) == []


async def test_history_gives_the_newest_100_by_default(make_bus: BusFactory) -> None:
    provider = make_bus("dr-smith")
    for n in range(101):
        await provider.publish(CHANNEL, {"n": n})
    assert [env.message["n"] for env in await provider.history(CHANNEL)] == list(range(1, 101))


async def test_a_full_page_of_unreadable_messages_is_an_empty_history(make_bus: BusFactory) -> None:
    intruder, provider = make_bus("intruder", cipher_key=None), make_bus("dr-smith")
    for n in range(2):
        await intruder.publish(CHANNEL, {"n": n})
    assert await provider.history(CHANNEL, limit=2) == []
