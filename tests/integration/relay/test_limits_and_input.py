"""Bounds, 200 long-polls at once, malformed publish input, and what the relay keeps and logs."""

from __future__ import annotations

import asyncio
import logging
from urllib.parse import quote

import aiohttp
import pytest
from pubnub.models.consumer.v3.channel import Channel

from telehealth_devstack.relay import Relay
from telehealth_devstack.relay.client import sdk_client
from tests.support.relay import ClientFactory

CHANNEL = "consultation.prov1.pat1"
MARKER = "PHI-MARKER-Jane-Doe-1970-01-01"


async def test_oldest_messages_and_channels_are_evicted() -> None:
    async with Relay(max_messages_per_channel=3, max_channels=2) as small:
        alice = sdk_client(small, user_id="alice")
        try:
            for index in range(5):
                await alice.publish().channel("a").message(index).result()
            assert [m.payload for m in small.stored_messages("a")] == [2, 3, 4]
            fetched = await alice.fetch_messages().channels(["a"]).result()
            assert [m.message for m in fetched.channels["a"]] == [2, 3, 4]

            await alice.publish().channel("b").message("b").result()
            await alice.publish().channel("c").message("c").result()

            assert small.stored_messages("a") == [], "the least recently used channel went first"
            assert [m.payload for m in small.stored_messages("c")] == ["c"]
        finally:
            await alice.stop()


async def test_200_concurrent_long_polls_are_all_answered(relay: Relay, http: aiohttp.ClientSession) -> None:
    async with http.get(f"{relay.url}/time/0") as answer:
        since = str((await answer.json())[0])
    url = f"{relay.url}/v2/subscribe/{relay.subscribe_key}/broadcast/0"

    async def long_poll(index: int) -> list[object]:
        async with http.get(url, params={"uuid": f"kiosk-{index}", "tt": since}) as answer:
            assert answer.status == 200
            return [m["d"] for m in (await answer.json())["m"]]

    polls = [asyncio.ensure_future(long_poll(i)) for i in range(200)]
    await asyncio.wait_for(relay.wait_for_subscribers(200), 20)

    relay.inject_event("broadcast", 0, {"announce": 1})

    answers = await asyncio.wait_for(asyncio.gather(*polls), 20)
    assert answers == [[{"announce": 1}]] * 200
    assert len(relay.occupants("broadcast")) == 200


def publish_url(relay: Relay, raw_message: str) -> str:
    return f"{relay.url}/publish/{relay.publish_key}/{relay.subscribe_key}/0/{CHANNEL}/0/{raw_message}"


async def test_a_get_publish_over_16_kb_is_accepted(relay: Relay, http: aiohttp.ClientSession) -> None:
    message = '"' + "x" * 20_000 + '"'
    async with http.get(publish_url(relay, quote(message, safe=""))) as answer:
        assert answer.status == 200
        ok, text, timetoken = await answer.json()
    assert (ok, text) == (1, "Sent")
    assert relay.stored_messages(CHANNEL)[0].timetoken == int(timetoken)


@pytest.mark.parametrize(
    ("method", "body_or_path", "status", "reason"),
    [
        ("GET", quote("{not json", safe=""), 400, "Invalid JSON"),
        ("POST", "{not json", 400, "Invalid JSON"),
        ("GET", quote('"' + "x" * 40_000 + '"', safe=""), 414, "Message Too Large"),
        ("POST", '"' + "x" * 40_000 + '"', 414, "Message Too Large"),
    ],
)
async def test_malformed_publishes_get_a_clear_error_and_change_nothing(
    relay: Relay, http: aiohttp.ClientSession, method: str, body_or_path: str, status: int, reason: str
) -> None:
    if method == "GET":
        request = http.get(publish_url(relay, body_or_path))
    else:
        url = f"{relay.url}/publish/{relay.publish_key}/{relay.subscribe_key}/0/{CHANNEL}/0"
        request = http.post(url, data=body_or_path, headers={"Content-Type": "application/json"})
    async with request as answer:
        assert answer.status == status
        assert answer.headers["Access-Control-Allow-Origin"] == "*"
        body = await answer.json()
    assert body[:2] == [0, reason]
    assert relay.stored_messages(CHANNEL) == []
    assert relay.recent_messages(CHANNEL) == []


async def test_the_sdk_sees_a_40_kb_message_refused(make_client: ClientFactory, relay: Relay) -> None:
    answer = await make_client("alice").publish().channel(CHANNEL).message("y" * 40_000).future()
    assert answer.status.is_error()
    assert answer.status.status_code == 414
    assert relay.stored_messages(CHANNEL) == []


async def test_invalid_meta_and_wrong_keys_are_refused(relay: Relay, http: aiohttp.ClientSession) -> None:
    async with http.get(publish_url(relay, "1"), params={"meta": "{broken"}) as answer:
        assert answer.status == 400
    wrong_key = f"{relay.url}/publish/pub-c-other/{relay.subscribe_key}/0/{CHANNEL}/0/1"
    async with http.get(wrong_key) as answer:
        assert (answer.status, (await answer.json())[1]) == (400, "Invalid Key")
    async with http.get(f"{relay.url}/v1/nothing-here") as answer:
        assert answer.status == 404
        assert (await answer.json())["error"] is True
    assert relay.recent_messages(CHANNEL) == []


async def test_ciphertext_is_all_the_relay_keeps_and_its_logs_hold_no_payload_token_or_key(
    make_client: ClientFactory, relay: Relay, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    relay.enforce_access = True
    admin = make_client("clinic", with_secret_key=True)
    token = (await admin.grant_token(channels=[Channel.id(CHANNEL).read().write()], ttl=5).result()).token
    secure = make_client("pat1", cipher_key="cipher-key-1", token=token)
    await secure.publish().channel(CHANNEL).message({"text": MARKER}).meta({"kind": "chat"}).result()
    await secure.publish().channel(CHANNEL).message({"text": MARKER}).use_post(True).result()
    denied = await secure.publish().channel("elsewhere").message(MARKER).future()
    assert denied.status.status_code == 403

    assert MARKER not in relay.dump_text()
    assert len(relay.stored_messages(CHANNEL)) == 2
    # The same marker in clear text does show up, so the search above can fail.
    await admin.publish().channel("clear").message(MARKER).result()
    assert MARKER in relay.dump_text()

    relay_logs = [
        r.getMessage()
        for r in caplog.records
        if r.name.startswith("telehealth_devstack.relay") or r.name.startswith("aiohttp")
    ]
    assert relay_logs, "the relay logs request summaries at DEBUG"
    for line in relay_logs:
        for secret in (MARKER, token, relay.secret_key, relay.publish_key, relay.subscribe_key):
            assert secret not in line
