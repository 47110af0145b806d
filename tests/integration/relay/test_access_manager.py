"""Access Manager v3 on the relay with the real SDK: grant, parse_token, enforcement, revoke, CORS."""

from __future__ import annotations

import aiohttp
from pubnub.endpoints.presence.heartbeat import Heartbeat
from pubnub.endpoints.pubsub.subscribe import Subscribe
from pubnub.models.consumer.v3.channel import Channel
from pubnub.models.consumer.v3.uuid import UUID
from pubnub.pubnub_asyncio import PubNubAsyncio

from telehealth_devstack.relay import ManualClock, Relay
from telehealth_devstack.relay.client import sdk_config
from tests.support.relay import ClientFactory, assert_denied, grant

CHANNEL = "consultation.prov1.pat1"
OTHER = "consultation.prov2.pat9"


async def test_grant_and_parse_token_round_trip(make_client: ClientFactory, relay_clock: ManualClock) -> None:
    admin = make_client("clinic", with_secret_key=True)
    token = await grant(
        admin,
        [
            Channel.id(CHANNEL).read().write(),
            Channel.id(f"{CHANNEL}-pnpres").read(),
            Channel.pattern(r"^waiting-room\.[a-z0-9]+$").write(),
            UUID.id("pat1").get().update(),
        ],
        ttl=15,
        user="pat1",
        meta={"role": "patient"},
    )

    parsed = admin.parse_token(token)

    assert parsed["version"] == 2
    assert parsed["ttl"] == 15
    assert parsed["timestamp"] == int(relay_clock())
    assert parsed["authorized_uuid"] == "pat1"
    assert parsed["meta"] == {"role": "patient"}
    channels = parsed["resources"]["channels"]
    assert set(channels) == {CHANNEL, f"{CHANNEL}-pnpres"}
    assert channels[CHANNEL]["read"] and channels[CHANNEL]["write"] and not channels[CHANNEL]["manage"]
    assert channels[f"{CHANNEL}-pnpres"]["read"] and not channels[f"{CHANNEL}-pnpres"]["write"]
    pattern = parsed["patterns"]["channels"][r"^waiting-room\.[a-z0-9]+$"]
    assert pattern["write"] and not pattern["read"]
    assert parsed["resources"]["uuids"]["pat1"] == {
        "read": False,
        "write": False,
        "manage": False,
        "delete": False,
        "get": True,
        "update": True,
        "join": False,
    }


async def test_grant_is_refused_without_the_secret_key(relay: Relay, http: aiohttp.ClientSession) -> None:
    config = sdk_config(relay, user_id="mallory", with_secret_key=True)
    config.secret_key = "not-the-secret"
    forger = PubNubAsyncio(config)
    try:
        assert_denied(
            await forger.grant_token(channels=[Channel.id(CHANNEL).read()], ttl=5).future(),
            "Signature Does Not Match",
        )
    finally:
        await forger.stop()
    url = f"{relay.url}/v3/pam/{relay.subscribe_key}/grant"
    async with http.post(url, json={"ttl": 5, "permissions": {}}) as unsigned:
        assert unsigned.status == 403


async def test_a_token_without_the_channel_gets_403_on_publish_and_subscribe(
    make_client: ClientFactory, relay: Relay
) -> None:
    relay.enforce_access = True
    token = await grant(make_client("clinic", with_secret_key=True), [Channel.id(CHANNEL).read().write()])
    patient = make_client("pat1", token=token)

    assert not (await patient.publish().channel(CHANNEL).message("ok").future()).status.is_error()
    assert_denied(await patient.publish().channel(OTHER).message("no").future())
    assert relay.stored_messages(OTHER) == []

    # The SDK's own subscribe request (its event engine would retry a 403 like a network error).
    assert not (await Subscribe(patient).channels([CHANNEL]).timetoken(0).future()).status.is_error()
    assert_denied(await Subscribe(patient).channels([CHANNEL, OTHER]).timetoken(0).future())


async def test_without_a_token_everything_is_refused(make_client: ClientFactory, relay: Relay) -> None:
    relay.enforce_access = True
    anonymous = make_client("anon")
    assert_denied(await anonymous.publish().channel(CHANNEL).message("x").future())
    assert_denied(await anonymous.fetch_messages().channels([CHANNEL]).future())
    assert_denied(await anonymous.here_now().channels([CHANNEL]).future())


async def test_an_expired_token_gets_403(
    make_client: ClientFactory, relay: Relay, relay_clock: ManualClock
) -> None:
    relay.enforce_access = True
    token = await grant(make_client("clinic", with_secret_key=True), [Channel.id(CHANNEL).write()], ttl=1)
    patient = make_client("pat1", token=token)
    assert not (await patient.publish().channel(CHANNEL).message(1).future()).status.is_error()

    relay_clock.advance(60)

    assert_denied(await patient.publish().channel(CHANNEL).message(2).future(), "Token is expired.")
    assert [m.payload for m in relay.stored_messages(CHANNEL)] == [1]


async def test_a_token_is_accepted_without_its_base64_padding(
    make_client: ClientFactory, relay: Relay
) -> None:
    relay.enforce_access = True
    token = await grant(make_client("clinic", with_secret_key=True), [Channel.id(CHANNEL).write()])
    unpadded = token.rstrip("=")
    patient = make_client("pat1", token=unpadded)

    assert not (await patient.publish().channel(CHANNEL).message(1).future()).status.is_error()
    # parse_token does not restore the padding itself (SDK 10.8): pad first.
    parsed = patient.parse_token(unpadded + "=" * (-len(unpadded) % 4))
    assert parsed["resources"]["channels"][CHANNEL]["write"]


async def test_a_revoked_token_gets_403(make_client: ClientFactory, relay: Relay) -> None:
    relay.enforce_access = True
    admin = make_client("clinic", with_secret_key=True)
    token = await grant(admin, [Channel.id(CHANNEL).read().write()])
    patient = make_client("pat1", token=token)
    assert not (await patient.publish().channel(CHANNEL).message(1).future()).status.is_error()

    revoked = await admin.revoke_token(token).result()

    assert revoked.status == 200
    assert_denied(await patient.publish().channel(CHANNEL).message(2).future(), "Token is revoked.")
    assert_denied(await patient.fetch_messages().channels([CHANNEL]).future(), "Token is revoked.")


async def test_a_token_bound_to_one_user_is_refused_for_another(
    make_client: ClientFactory, relay: Relay
) -> None:
    relay.enforce_access = True
    token = await grant(
        make_client("clinic", with_secret_key=True), [Channel.id(CHANNEL).read().write()], user="pat1"
    )

    impostor = make_client("prov1", token=token)
    assert_denied(
        await impostor.publish().channel(CHANNEL).message("forged").future(),
        "Token is not authorized for this uuid.",
    )
    owner = make_client("pat1", token=token)
    assert not (await owner.publish().channel(CHANNEL).message("mine").future()).status.is_error()

    assert [(m.payload, m.publisher) for m in relay.stored_messages(CHANNEL)] == [("mine", "pat1")]


async def test_pattern_grants(make_client: ClientFactory, relay: Relay) -> None:
    relay.enforce_access = True
    pattern = r"^consultation\.prov1\.[A-Za-z0-9_-]+$"
    token = await grant(make_client("clinic", with_secret_key=True), [Channel.pattern(pattern).write()])
    provider = make_client("prov1", token=token)

    assert not (await provider.publish().channel(CHANNEL).message(1).future()).status.is_error()
    assert_denied(await provider.publish().channel(OTHER).message(2).future())
    # The pattern grants write only: reading history needs read.
    assert_denied(await provider.fetch_messages().channels([CHANNEL]).future())


async def test_uuid_metadata_needs_get_and_update(make_client: ClientFactory, relay: Relay) -> None:
    relay.enforce_access = True
    admin = make_client("clinic", with_secret_key=True)
    await admin.set_uuid_metadata(uuid="pat1", custom={"consent_telehealth": "{}"}).result()
    token = await grant(admin, [UUID.id("pat1").get()])
    patient = make_client("pat1", token=token)

    got = await patient.get_uuid_metadata(uuid="pat1", include_custom=True).result()
    assert got.data["custom"] == {"consent_telehealth": "{}"}
    assert_denied(await patient.set_uuid_metadata(uuid="pat1", custom={"x": "y"}).future())
    assert_denied(await patient.get_uuid_metadata(uuid="pat2").future())


async def test_secret_key_signed_requests_pass_without_a_token(
    make_client: ClientFactory, relay: Relay
) -> None:
    relay.enforce_access = True
    server = make_client("clinic", with_secret_key=True)

    assert not (await server.publish().channel(OTHER).message("from the server").future()).status.is_error()
    posted = await server.publish().channel(OTHER).message("by POST").use_post(True).future()
    assert not posted.status.is_error()
    fetched = await server.fetch_messages().channels([OTHER]).result()
    assert [m.message for m in fetched.channels[OTHER]] == ["from the server", "by POST"]


async def test_a_403_carries_cors_headers_and_pubnubs_body(relay: Relay, http: aiohttp.ClientSession) -> None:
    relay.enforce_access = True
    url = f"{relay.url}/v2/subscribe/{relay.subscribe_key}/{CHANNEL}/0"

    async with http.get(
        url, params={"uuid": "x", "tt": "0"}, headers={"Origin": "http://localhost"}
    ) as answer:
        body = await answer.json()
        assert answer.status == 403
        assert answer.headers["Access-Control-Allow-Origin"] == "*"
    assert body == {
        "status": 403,
        "error": True,
        "service": "Access Manager",
        "message": "Forbidden",
        "payload": {"channels": [CHANNEL]},
    }


async def test_an_options_preflight_is_answered(relay: Relay, http: aiohttp.ClientSession) -> None:
    headers = {
        "Origin": "http://localhost:5173",
        "Access-Control-Request-Method": "PATCH",
        "Access-Control-Request-Headers": "content-type,if-match",
    }
    url = f"{relay.url}/v2/objects/{relay.subscribe_key}/uuids/pat1"
    async with http.options(url, headers=headers) as answer:
        assert answer.status == 200
        assert answer.headers["Access-Control-Allow-Origin"] == "*"
        assert "PATCH" in answer.headers["Access-Control-Allow-Methods"]
        assert answer.headers["Access-Control-Allow-Headers"] == "content-type,if-match"


async def test_a_403_names_only_the_channels_denied(
    make_client: ClientFactory, relay: Relay, http: aiohttp.ClientSession
) -> None:
    relay.enforce_access = True
    admin = make_client("clinic", with_secret_key=True)
    token = await grant(admin, [Channel.id(CHANNEL).read()], user="pat1")
    url = f"{relay.url}/v2/subscribe/{relay.subscribe_key}/{CHANNEL},{OTHER}/0"

    async with http.get(url, params={"uuid": "pat1", "tt": "0", "auth": token}) as answer:
        assert answer.status == 403
        assert (await answer.json())["payload"] == {"channels": [OTHER]}


async def test_global_here_now_needs_the_secret_key_when_enforced(
    make_client: ClientFactory, relay: Relay
) -> None:
    """A patient's token must not list every channel and who is on it (who else waits or consults)."""
    relay.enforce_access = True
    admin = make_client("clinic", with_secret_key=True)
    # Another patient is present in her own consultation.
    assert not (await Heartbeat(admin).channels([OTHER]).future()).status.is_error()
    assert relay.occupants(OTHER) == ["clinic"]
    token = await grant(admin, [Channel.id(CHANNEL).read().write(), Channel.id(f"{CHANNEL}-pnpres").read()])
    patient = make_client("pat1", token=token)
    assert not (await Heartbeat(patient).channels([CHANNEL]).future()).status.is_error()

    refused = await patient.here_now().future()
    assert_denied(refused, "Forbidden: needs the secret key's signature")
    assert OTHER not in str(refused.status.error_data.exception._errormsg)
    # Its own channel, named, still works; the server with the secret key still sees everything.
    own = await patient.here_now().channels([CHANNEL]).future()
    assert [o.uuid for o in own.result.channels[0].occupants] == ["pat1"]
    everything = await admin.here_now().future()
    assert sorted(c.channel_name for c in everything.result.channels) == [CHANNEL, OTHER]


async def test_global_here_now_is_open_without_enforcement(make_client: ClientFactory, relay: Relay) -> None:
    anyone = make_client("anyone")
    assert not (await Heartbeat(anyone).channels([OTHER]).future()).status.is_error()
    answer = await anyone.here_now().future()
    assert [c.channel_name for c in answer.result.channels] == [OTHER]
