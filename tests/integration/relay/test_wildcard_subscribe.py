"""Wildcard subscribe as PubNub serves it (support article "How many channel segments are supported
with wildcard subscribe"; the Subscriptions guide): ``a.b.*`` brings every three-segment channel
below ``a.b`` and their presence through ``a.b.*-pnpres``, never a four-segment one; each entry
names its concrete channel in ``c`` and the wildcard in ``b``; a wildcard cannot be published to;
Access Manager reads the wildcard name itself against the token (a provider's pattern grant covers
it, a patient's exact grants do not)."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest
from pubnub.models.consumer.v3.channel import Channel

from telehealth_devstack.relay import Relay
from tests.support.relay import WAIT, ClientFactory, grant

pytestmark = pytest.mark.integration

WILDCARD = "consultation.dr1.*"
MAIN = "consultation.dr1.pat1"


async def poll(
    relay: Relay, http: aiohttp.ClientSession, channels: str, tt: str, **params: str
) -> tuple[int, Any]:
    url = f"{relay.url}/v2/subscribe/{relay.subscribe_key}/{channels}/0"
    async with http.get(url, params={"uuid": "dr1", "tt": tt, **params}) as answer:
        return answer.status, await answer.json()


async def test_a_wildcard_brings_three_segment_channels_and_their_presence_only(
    relay: Relay, http: aiohttp.ClientSession, make_client: ClientFactory
) -> None:
    channels = f"{WILDCARD},{WILDCARD}-pnpres"
    status, handshake = await poll(relay, http, channels, "0")
    assert status == 200
    publisher = make_client("pat1")
    for channel in (f"{MAIN}.video", "consultation.dr1x.pat1", "consultation.dr2.pat1", MAIN):
        assert not (await publisher.publish().channel(channel).message(channel).future()).status.is_error()
    # The patient's own subscribe makes it present on its channel: a join through the wildcard.
    patient = asyncio.ensure_future(
        http.get(
            f"{relay.url}/v2/subscribe/{relay.subscribe_key}/{MAIN}/0", params={"uuid": "pat1", "tt": "0"}
        )
    )
    answer = await patient
    answer.release()

    seen: list[dict[str, Any]] = []
    tt = handshake["t"]["t"]
    while len(seen) < 2:
        status, body = await asyncio.wait_for(poll(relay, http, channels, tt), WAIT)
        assert status == 200
        seen.extend(body["m"])
        tt = body["t"]["t"]
    assert [(m["c"], m["b"], m["d"]) for m in seen if not m["c"].endswith("-pnpres")] == [
        (MAIN, WILDCARD, MAIN)
    ]
    [join] = [m for m in seen if m["c"].endswith("-pnpres")]
    assert (join["c"], join["b"], join["d"]["action"], join["d"]["uuid"]) == (
        f"{MAIN}-pnpres",
        f"{WILDCARD}-pnpres",
        "join",
        "pat1",
    )
    # A wildcard subscriber is present on no one channel it brings.
    assert relay.occupants(MAIN) == ["pat1"]


async def test_a_channel_listed_and_brought_by_a_wildcard_arrives_once_named_by_itself(
    relay: Relay, http: aiohttp.ClientSession, make_client: ClientFactory
) -> None:
    _, handshake = await poll(relay, http, f"{WILDCARD},{MAIN}", "0")
    await make_client("pat1").publish().channel(MAIN).message("once").future()
    _, body = await asyncio.wait_for(poll(relay, http, f"{WILDCARD},{MAIN}", handshake["t"]["t"]), WAIT)
    assert [(m["c"], m["b"]) for m in body["m"]] == [(MAIN, MAIN)]


@pytest.mark.parametrize("name", ["consultation.dr1.pat1.*", "consultation*", "consultation.*.pat1"])
async def test_names_that_are_no_wildcard_are_literal_channels(
    relay: Relay, http: aiohttp.ClientSession, make_client: ClientFactory, name: str
) -> None:
    _, handshake = await poll(relay, http, name, "0")
    publisher = make_client("pat1")
    for channel in (f"{MAIN}.video", MAIN, name):
        assert not (await publisher.publish().channel(channel).message(channel).future()).status.is_error()
    status, body = await asyncio.wait_for(poll(relay, http, name, handshake["t"]["t"]), WAIT)
    assert status == 200
    assert [(m["c"], m["b"]) for m in body["m"]] == [(name, name)]


async def test_a_wildcard_cannot_be_published_to(make_client: ClientFactory) -> None:
    envelope = await make_client("pat1").publish().channel(WILDCARD).message("x").future()
    assert envelope.status.is_error()
    assert envelope.status.status_code == 400


async def test_access_manager_reads_the_wildcard_name_against_the_token(
    relay: Relay, make_client: ClientFactory
) -> None:
    relay.enforce_access = True
    admin = make_client("clinic", with_secret_key=True)
    provider_token = await grant(
        admin, [Channel.pattern(r"^consultation\.dr1\..*$").read().write()], user="dr1"
    )
    patient_token = await grant(
        admin, [Channel.id(MAIN).read().write(), Channel.id(f"{MAIN}-pnpres").read()], user="pat1"
    )
    provider = make_client("dr1", token=provider_token)
    allowed = await provider.here_now().channels([WILDCARD, f"{WILDCARD}-pnpres"]).future()
    assert not allowed.status.is_error()
    patient = make_client("pat1", token=patient_token)
    refused = await patient.here_now().channels([WILDCARD]).future()
    assert refused.status.status_code == 403
