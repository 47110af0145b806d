"""Where the relay must answer as PubNub does for security: signatures, Access Manager's refusals,
deep JSON, sizes, presence channels, presence timeouts and over-long request lines.

The exact answers come from PubNub's own SDK tests (the Access Manager acceptance scenarios and
the Python SDK's recorded responses).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest
from pubnub import utils
from pubnub.models.consumer.v3.channel import Channel
from pubnub.models.consumer.v3.uuid import UUID
from pubnub.pubnub_asyncio import PubNubAsyncio
from yarl import URL

from telehealth_devstack.relay import ManualClock, Relay
from tests.support import raw_http
from tests.support.relay import WAIT, ClientFactory, grant, subscribed

CHANNEL = "consultation.prov1.pat1"


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def signed_target(
    relay: Relay, method: str, path: str, params: dict[str, str], body: str, timestamp: int
) -> str:
    """A request target signed as the SDKs sign (v2), with the given ``timestamp``."""
    query = {**params, "timestamp": str(timestamp)}
    text = f"{method}\n{relay.publish_key}\n{path}\n{utils.prepare_pam_arguments(query)}\n{body}"
    signature = "v2." + utils.sign_sha256(relay.secret_key, text).rstrip("=")
    return f"{path}?{utils.prepare_pam_arguments({**query, 'signature': signature})}"


def grant_body(**permissions: Any) -> dict[str, Any]:
    return {"ttl": 15, "permissions": {"resources": {}, "patterns": {}, "meta": {}, **permissions}}


async def post_grant(
    relay: Relay, http: aiohttp.ClientSession, body: Any, *, timestamp: int | None = None
) -> tuple[int, Any]:
    text = body if isinstance(body, str) else json.dumps(body)
    path = f"/v3/pam/{relay.subscribe_key}/grant"
    target = signed_target(
        relay, "POST", path, {}, text, int(time.time()) if timestamp is None else timestamp
    )
    async with http.post(
        relay.url + target, data=text, headers={"Content-Type": "application/json"}
    ) as answer:
        assert answer.headers["Access-Control-Allow-Origin"] == "*"
        return answer.status, await answer.json()


def grant_error(message: str, detail: str, location: str) -> dict[str, Any]:
    return {
        "status": 400,
        "service": "Access Manager",
        "error": {
            "message": message,
            "source": "grant",
            "details": [{"message": detail, "location": location, "locationType": "body"}],
        },
    }


# -- signed requests: the timestamp ---------------------------------------------------------


async def test_a_grant_signed_in_1970_mints_no_token(relay: Relay, http: aiohttp.ClientSession) -> None:
    body = grant_body(resources={"channels": {CHANNEL: 3}})
    status, answer = await post_grant(relay, http, body, timestamp=0)
    assert status == 403
    assert answer["service"] == "Access Manager"
    assert answer["error"]["details"][0]["location"] == "timestamp"
    assert "token" not in json.dumps(answer)

    # The same request signed now is fine: only the timestamp was wrong.
    status, answer = await post_grant(relay, http, body)
    assert status == 200 and answer["data"]["token"]


async def test_signed_requests_over_60_s_from_the_relays_clock_are_refused(
    make_client: ClientFactory, relay: Relay, relay_clock: ManualClock
) -> None:
    admin = make_client("clinic", with_secret_key=True)
    relay_clock.advance(58)  # within PubNub's +-60 s: accepted
    assert await grant(admin, [Channel.id(CHANNEL).read()])

    relay_clock.advance(10)
    envelope = await admin.grant_token(channels=[Channel.id(CHANNEL).read()], ttl=15).future()
    assert envelope.status.is_error()
    assert envelope.status.status_code == 403
    # A signed server request (here_now, as the clinic sends) is refused the same way.
    relay.enforce_access = True
    here = await admin.here_now().channels([CHANNEL]).future()
    assert here.status.is_error() and here.status.status_code == 403


# -- Access Manager's refusals, as PubNub words them -----------------------------------------


@pytest.mark.parametrize("ttl", [0, 43_201])
async def test_a_ttl_out_of_range_is_pubnubs_invalid_ttl(
    relay: Relay, http: aiohttp.ClientSession, ttl: int
) -> None:
    body = {**grant_body(resources={"channels": {CHANNEL: 1}}), "ttl": ttl}
    assert await post_grant(relay, http, body) == (
        400,
        grant_error("Invalid ttl", "Range should be 1 to 43200 minute(s).", "ttl"),
    )


async def test_a_grant_with_every_permission_false_is_refused(
    relay: Relay, http: aiohttp.ClientSession
) -> None:
    body = grant_body(resources={"uuids": {"uuid-1": 0}})
    assert await post_grant(relay, http, body) == (
        400,
        grant_error(
            "Invalid permissions",
            "Unexpected value: `permissions.resources.uuids.uuid-1` must be positive and non-zero.",
            "permissions.resources.uuids.uuid-1",
        ),
    )


@pytest.mark.parametrize(
    ("pattern", "detail"),
    [
        ("!<[^>]+>++", "Syntax error: multiple repeat."),
        ("(!<[^>]+>)+", "Only non-capturing groups are allowed. Try replacing `(` with `(?:`."),
        ("^a(?P<name>b)$", "Only non-capturing groups are allowed. Try replacing `(` with `(?:`."),
        ("^a{2}+$", "Syntax error: multiple repeat."),
        ("^a?+$", "Syntax error: multiple repeat."),
    ],
)
async def test_regexes_pubnub_refuses_are_refused(
    relay: Relay, http: aiohttp.ClientSession, pattern: str, detail: str
) -> None:
    body = grant_body(patterns={"uuids": {pattern: 32}})
    assert await post_grant(relay, http, body) == (
        400,
        grant_error("Invalid RegExp", detail, f"permissions.patterns.uuids.{pattern}"),
    )


async def test_non_capturing_groups_and_escaped_parentheses_are_accepted(
    relay: Relay, http: aiohttp.ClientSession
) -> None:
    body = grant_body(patterns={"channels": {r"^(?:a|b)\(x\)[()]+$": 1}})
    status, _ = await post_grant(relay, http, body)
    assert status == 200


async def test_revoking_an_expired_token_is_pubnubs_400(
    make_client: ClientFactory, relay: Relay, relay_clock: ManualClock, http: aiohttp.ClientSession
) -> None:
    admin = make_client("clinic", with_secret_key=True)
    token = await grant(admin, [Channel.id(CHANNEL).read()], ttl=1)
    relay_clock.advance(61)
    # The SDK's clock and the relay's now differ by a minute: sign against the relay's clock.
    path = f"/v3/pam/{relay.subscribe_key}/grant/{quote(token, safe='')}"
    target = signed_target(relay, "DELETE", path, {}, "", int(relay_clock()))
    async with http.delete(URL(relay.url + target, encoded=True)) as answer:
        assert answer.status == 400
        body = await answer.json()
    assert body["status"] == 400
    assert body["service"] == "Access Manager"
    assert body["error"]["message"] == "Invalid token"
    assert body["error"]["source"] == "revoke"
    detail = body["error"]["details"][0]
    assert detail["message"] == "Token expired."
    assert (detail["location"], detail["locationType"]) == ("token", "path")


async def test_revoking_a_token_that_is_not_ours_is_pubnubs_400(
    make_client: ClientFactory, relay: Relay
) -> None:
    envelope = await make_client("clinic", with_secret_key=True).revoke_token("not-a-token").future()
    assert envelope.status.status_code == 400
    body = envelope.status.error_data.exception._errormsg
    assert body["error"]["message"] == "Invalid token"
    assert body["error"]["source"] == "revoke"
    assert body["error"]["details"][0]["location"] == "token"


# -- the two Access Manager rules a mutation run showed unpinned --------------------------------


async def test_a_token_signed_with_another_secret_is_refused(
    make_client: ClientFactory, relay: Relay
) -> None:
    relay.enforce_access = True
    async with Relay(secret_key="sec-c-someone-else") as other:
        foreign_admin = PubNubAsyncio(_admin_config(other))
        try:
            foreign = await grant(foreign_admin, [Channel.id(CHANNEL).write()])
        finally:
            await foreign_admin.stop()
    envelope = await make_client("pat1", token=foreign).publish().channel(CHANNEL).message(1).future()
    assert envelope.status.status_code == 403
    assert envelope.status.error_data.exception._errormsg["message"] == "Invalid token"
    assert relay.recent_messages(CHANNEL) == []


async def test_a_token_with_a_widened_resource_but_its_old_signature_is_refused(
    make_client: ClientFactory, relay: Relay
) -> None:
    import base64

    import cbor2

    relay.enforce_access = True
    token = await grant(make_client("clinic", with_secret_key=True), [Channel.id("lobby").write()])
    body = cbor2.loads(base64.urlsafe_b64decode(token))
    body[b"res"][b"chan"] = {CHANNEL: 3}  # the signature still covers "lobby" only
    forged = base64.urlsafe_b64encode(cbor2.dumps(body)).decode()
    envelope = await make_client("pat1", token=forged).publish().channel(CHANNEL).message(1).future()
    assert envelope.status.status_code == 403
    assert relay.recent_messages(CHANNEL) == []


async def test_a_pattern_never_widens_an_explicitly_listed_resource(
    make_client: ClientFactory, relay: Relay
) -> None:
    relay.enforce_access = True
    token = await grant(
        make_client("clinic", with_secret_key=True),
        [Channel.id(CHANNEL).read(), Channel.pattern("^consultation\\..*$").read().write()],
    )
    provider = make_client("prov1", token=token)

    listed = await provider.publish().channel(CHANNEL).message(1).future()
    assert listed.status.status_code == 403  # read only, as listed; the pattern's write does not apply
    other = await provider.publish().channel("consultation.prov1.pat2").message(2).future()
    assert not other.status.is_error()
    assert relay.recent_messages(CHANNEL) == []


def _admin_config(relay: Relay) -> Any:
    from telehealth_devstack.relay.client import sdk_config

    return sdk_config(relay, user_id="clinic", with_secret_key=True)


# -- deep JSON and sizes -------------------------------------------------------------------------


def _publish_url(relay: Relay, message: str, channel: str = CHANNEL) -> str:
    keys = f"{relay.publish_key}/{relay.subscribe_key}"
    return f"{relay.url}/publish/{keys}/0/{channel}/0/{quote(message, safe='')}"


@pytest.mark.parametrize("depth", [976, 5000])
async def test_deep_json_is_400_on_every_endpoint_and_nothing_is_stored(
    make_client: ClientFactory, relay: Relay, http: aiohttp.ClientSession, depth: int
) -> None:
    deep = nested(depth)
    publish_post = f"{relay.url}/publish/{relay.publish_key}/{relay.subscribe_key}/0/{CHANNEL}/0"
    requests = [
        http.get(_publish_url(relay, deep)),
        http.post(publish_post, data=deep, headers={"Content-Type": "application/json"}),
        http.get(_publish_url(relay, "1"), params={"meta": '{"a":' + deep + "}"}),
        http.get(
            f"{relay.url}/signal/{relay.publish_key}/{relay.subscribe_key}/0/{CHANNEL}/0/"
            + quote(deep, safe="")
        ),
        http.get(
            f"{relay.url}/v2/presence/sub-key/{relay.subscribe_key}/channel/{CHANNEL}/heartbeat",
            params={"uuid": "mallory", "state": '{"' + CHANNEL + '":{"a":' + deep + "}}"},
        ),
        http.patch(
            f"{relay.url}/v2/objects/{relay.subscribe_key}/uuids/mallory",
            data='{"custom":' + deep + "}",
            headers={"Content-Type": "application/json"},
        ),
    ]
    for request in requests:
        async with request as answer:
            assert answer.status == 400, await answer.text()
            assert answer.headers["Access-Control-Allow-Origin"] == "*"
            assert "nest" in (await answer.text()).lower()
    text = '{"ttl": 15, "permissions": {"resources": {"channels": {"a": 1}}, "meta": {"m": ' + deep + "}}}"
    status, answer_body = await post_grant(relay, http, text)
    assert status == 400 and answer_body["error"]["message"] == "Invalid request body"

    assert relay.recent_messages(CHANNEL) == []
    assert relay.occupants(CHANNEL) == []
    # The channel still works for everyone: a good message goes through subscribe and history.
    alice = make_client("alice")
    collector = await subscribed(alice, [CHANNEL])
    await make_client("bob").publish().channel(CHANNEL).message({"ok": 1}).future()
    assert (await asyncio.wait_for(collector.messages.get(), WAIT)).message == {"ok": 1}
    history = await alice.fetch_messages().channels([CHANNEL]).future()
    assert [m.message for m in history.result.channels[CHANNEL]] == [{"ok": 1}]


async def test_json_as_deep_as_allowed_is_accepted(relay: Relay, http: aiohttp.ClientSession) -> None:
    from telehealth_devstack.relay.jsonin import MAX_DEPTH

    async with http.get(_publish_url(relay, nested(MAX_DEPTH))) as answer:
        assert answer.status == 200
    async with http.get(_publish_url(relay, nested(MAX_DEPTH + 1))) as answer:
        assert answer.status == 400
    assert len(relay.stored_messages(CHANNEL)) == 1


async def test_bodies_over_the_cap_are_413(relay: Relay, http: aiohttp.ClientSession) -> None:
    big = json.dumps({"name": "x" * 200_000})
    url = f"{relay.url}/v2/objects/{relay.subscribe_key}/uuids/alice"
    async with http.patch(url, data=big, headers={"Content-Type": "application/json"}) as answer:
        assert answer.status == 413
        assert answer.headers["Access-Control-Allow-Origin"] == "*"
        assert (await answer.json())["error"] is True
    async with http.get(url) as answer:
        assert answer.status == 404


async def test_presence_state_over_the_cap_is_refused(relay: Relay, http: aiohttp.ClientSession) -> None:
    url = f"{relay.url}/v2/presence/sub-key/{relay.subscribe_key}/channel/{CHANNEL}/heartbeat"
    state = json.dumps({CHANNEL: {"note": "x" * 40_000}}, separators=(",", ":"))
    async with http.get(url, params={"uuid": "carol", "state": state}) as answer:
        assert answer.status == 400
        assert "state" in (await answer.json())["message"].lower()
    assert relay.occupants(CHANNEL) == []


async def test_a_huge_heartbeat_is_capped_at_pubnubs_maximum(
    relay: Relay, relay_clock: ManualClock, http: aiohttp.ClientSession
) -> None:
    url = f"{relay.url}/v2/presence/sub-key/{relay.subscribe_key}/channel/{CHANNEL}/heartbeat"
    async with http.get(url, params={"uuid": "carol", "heartbeat": "1e12"}) as answer:
        assert answer.status == 200
    relay_clock.advance(319)
    relay.expire_presence()
    assert relay.occupants(CHANNEL) == ["carol"]
    relay_clock.advance(2)
    relay.expire_presence()
    assert relay.occupants(CHANNEL) == []


# -- presence channels are the presence service's --------------------------------------------------


async def test_a_pattern_grant_cannot_forge_presence_events(make_client: ClientFactory, relay: Relay) -> None:
    relay.enforce_access = True
    token = await grant(
        make_client("clinic", with_secret_key=True), [Channel.pattern("^consultation\\..*").write()]
    )
    provider = make_client("prov1", token=token)
    forged = {"action": "leave", "uuid": "pat2", "occupancy": 0, "timestamp": 1}

    for channel in ("consultation.prov1.pat2-pnpres", "consultation.prov1.pat2"):
        envelope = await provider.publish().channel(channel).message(forged).future()
        if channel.endswith("-pnpres"):
            assert envelope.status.status_code == 400
        else:
            assert not envelope.status.is_error()
    signal = await provider.signal().channel("consultation.prov1.pat2-pnpres").message(forged).future()
    assert signal.status.status_code == 400
    # Not even the secret key writes presence events: only the presence service does.
    server = make_client("clinic", with_secret_key=True)
    refused = await server.publish().channel("consultation.prov1.pat2-pnpres").message(forged).future()
    assert refused.status.status_code == 400
    assert relay.recent_messages("consultation.prov1.pat2-pnpres") == []


# -- presence times out a user whose heartbeats stopped, long-poll or not ---------------------------


async def test_a_user_whose_heartbeats_stop_times_out_while_its_long_poll_is_open(
    make_client: ClientFactory, relay: Relay, relay_clock: ManualClock
) -> None:
    watcher = make_client("watcher")
    events = await subscribed(watcher, [CHANNEL], with_presence=True)
    await events.next_presence("join", "watcher")
    kiosk = make_client("kiosk", presence_timeout=60)  # subscribes, sends no heartbeats
    await subscribed(kiosk, [CHANNEL])
    await events.next_presence("join", "kiosk")
    await asyncio.wait_for(relay.wait_for_subscribers(2), WAIT)

    relay_clock.advance(61)
    relay.expire_presence()

    timed_out = await events.next_presence("timeout", "kiosk")
    assert timed_out.channel == CHANNEL
    assert "kiosk" not in relay.occupants(CHANNEL)


# -- over-long request lines -------------------------------------------------------------------------


async def raw_exchange(relay: Relay, request: bytes) -> tuple[int, dict[str, str], bytes]:
    return await raw_http.raw_exchange(relay.host, relay.port, request)


async def test_a_request_line_over_the_limit_gets_cors_and_logs_no_path(
    relay: Relay, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    marker = "SECRETMARKER"
    message = f"%22{marker * 20_000}%22"
    target = f"/publish/{relay.publish_key}/{relay.subscribe_key}/0/{CHANNEL}/0/{message}?auth=tok-{marker}"
    request = f"GET {target} HTTP/1.1\r\nHost: {relay.origin}\r\nConnection: close\r\n\r\n".encode()

    status, headers, body = await raw_exchange(relay, request)

    assert status == 414
    assert headers["access-control-allow-origin"] == "*"
    assert headers["content-type"].startswith("application/json")
    assert marker.encode() not in body
    assert json.loads(body)["error"] is True
    logged = "\n".join(caplog.text.splitlines() + [str(r.args) for r in caplog.records])
    assert marker not in logged
    assert relay.publish_key not in caplog.text


async def test_a_malformed_request_gets_json_with_cors_and_logs_no_path(
    relay: Relay, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    target = f"/publish/{relay.publish_key}/x?auth=tok-MARK"
    request = f"GET {target} HTTP/1.1\r\nHost: {relay.origin}\r\nBad Header\r\n\r\n"

    status, headers, body = await raw_exchange(relay, request.encode())

    assert status == 400
    assert headers["access-control-allow-origin"] == "*"
    assert json.loads(body)["error"] is True
    assert "tok-MARK" not in caplog.text and relay.publish_key not in caplog.text


async def test_no_relay_log_line_holds_a_path_or_query(
    make_client: ClientFactory, relay: Relay, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    relay.enforce_access = True
    token = await grant(make_client("clinic", with_secret_key=True), [UUID.id("pat1").get()])
    client = make_client("pat1", token=token)
    await client.publish().channel("SECRETCHANNEL").message("SECRETMESSAGE").use_post(False).future()
    await client.get_uuid_metadata().uuid("pat1").future()
    relay_lines = [
        r.getMessage() for r in caplog.records if r.name.startswith(("telehealth_client", "aiohttp"))
    ]
    for line in relay_lines:
        for secret in ("SECRETCHANNEL", "SECRETMESSAGE", token[:20], relay.publish_key, relay.subscribe_key):
            assert secret not in line
