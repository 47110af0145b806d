"""Time, publish, signal and long-poll subscribe."""

from __future__ import annotations

import asyncio
import contextlib
import math
from typing import Any

from aiohttp import web

from .access import Grant, Need, Permission
from .errors import publish_error, service_error
from .held_polls import Poll
from .http import Call, json_response
from .jsonin import JsonInputError, loads
from .presence import PRESENCE_SUFFIX
from .store import MESSAGE, SIGNAL, StoredMessage
from .wildcard import is_wildcard, presence_members, subscription_for

REGION = 1
MAX_PRESENCE_TIMEOUT = 320.0  # PubNub's largest presence timeout (seconds); larger asks are capped
MAX_STATE_BYTES = 32 * 1024  # presence state per request, as JSON


async def time_now(call: Call) -> web.StreamResponse:
    return json_response([call.state.timetokens.next()])


async def publish_get(call: Call) -> web.StreamResponse:
    # /publish/{pub}/{sub}/{signature}/{channel}/{callback}/{message}
    return _publish(call, call.raw_segments[6], MESSAGE)


async def publish_post(call: Call) -> web.StreamResponse:
    # /publish/{pub}/{sub}/{signature}/{channel}/{callback}, message in the body
    return _publish(call, call.body, MESSAGE, raw_is_body=True)


async def signal(call: Call) -> web.StreamResponse:
    # /signal/{pub}/{sub}/{signature}/{channel}/{callback}/{message}
    return _publish(call, call.raw_segments[6], SIGNAL)


def _publish(call: Call, raw: str, message_type: int, *, raw_is_body: bool = False) -> web.StreamResponse:
    state = call.state
    keys = state.keys
    publish_key, subscribe_key, channel = call.segments[1], call.segments[2], call.segments[4]
    if publish_key != keys.publish_key or subscribe_key != keys.subscribe_key:
        raise publish_error(400, "Invalid Key", state.timetokens.next())
    if not channel or "," in channel:
        raise publish_error(400, "Invalid Channel", state.timetokens.next())
    if channel.endswith(PRESENCE_SUFFIX):
        # Presence events are written by the presence service alone; no key or grant may forge one.
        raise publish_error(
            400, "Invalid Channel: presence channels cannot be published to", state.timetokens.next()
        )
    if is_wildcard(channel):
        # A wildcard is a subscription, never a destination (PubNub's Subscriptions guide).
        raise publish_error(400, "Invalid Channel: cannot publish to a wildcard", state.timetokens.next())
    call.authorize([Need("chan", channel, Permission.WRITE)])
    # PubNub counts the message as sent (escaped in the URL) plus the channel name.
    if len(raw.encode()) + len(channel.encode()) > state.limits.max_message_bytes:
        raise publish_error(414, "Message Too Large", state.timetokens.next())
    text = raw if raw_is_body else call.segments[6]
    try:
        payload = loads(text)
    except JsonInputError as error:
        raise publish_error(400, _invalid("Invalid JSON", error), state.timetokens.next()) from None
    meta: Any = None
    if "meta" in call.query:
        try:
            meta = loads(call.query["meta"])
        except JsonInputError as error:
            raise publish_error(400, f"Invalid meta: {error}", state.timetokens.next()) from None
        if meta is not None and not isinstance(meta, dict):
            raise publish_error(400, "Invalid meta: must be an object", state.timetokens.next())
    stored = message_type == MESSAGE and call.query.get("store", "1") not in ("0", "false")
    timetoken = state.deliver(
        channel,
        payload,
        publisher=call.uuid,
        meta=meta,
        message_type=message_type,
        custom_message_type=call.query.get("custom_message_type") or None,
        stored=stored,
    )
    return json_response([1, "Sent", str(timetoken)])


async def subscribe(call: Call) -> web.StreamResponse:
    # /v2/subscribe/{sub}/{channels}/{callback}
    state = call.state
    if call.segments[2] != state.keys.subscribe_key:
        raise service_error(400, "Invalid Subscribe Key", "Balancer")
    if call.query.get("channel-group"):
        raise service_error(400, "Channel groups are not supported by the development relay", "Balancer")
    channels = [c for c in call.segments[3].split(",") if c]
    if not channels:
        raise service_error(400, "No channels to subscribe to", "Balancer")
    grant = call.authorize([Need("chan", c, Permission.READ) for c in channels])
    try:
        since = int(call.query.get("tt") or 0)
    except ValueError:
        raise service_error(400, "Invalid timetoken", "Balancer") from None
    heartbeat = presence_timeout(call)
    members = presence_members(channels)
    uuid = call.uuid
    # The handshake (tt=0) only learns where "now" is; a join it causes comes after that point,
    # so the subscriber sees its own join on its next poll, as with PubNub.
    handshake = state.timetokens.next() if since == 0 else None
    if uuid is not None:
        state.presence.heartbeat(members, uuid, heartbeat, state_param(call))
    if handshake is not None:
        return _envelope(call, handshake, [], channels)
    limit = state.limits.max_messages_per_poll
    messages = state.store.since(channels, since, limit)
    if not messages:
        messages = await _wait(call, channels, members, since, heartbeat, grant)
    last = messages[-1].timetoken if messages else state.timetokens.next()
    return _envelope(call, last, messages, channels)


def _invalid(reason: str, error: JsonInputError) -> str:
    # Plain bad JSON keeps PubNub's bare "Invalid JSON"; other reasons are named.
    return reason if str(error) == "not JSON" else f"{reason}: {error}"


def presence_timeout(call: Call) -> float:
    """The request's ``heartbeat`` in seconds, capped at PubNub's maximum so that presence expires."""
    try:
        value = float(call.query["heartbeat"])
    except (KeyError, ValueError):
        return call.state.limits.presence_timeout
    if not math.isfinite(value) or value <= 0:
        return call.state.limits.presence_timeout
    return min(value, MAX_PRESENCE_TIMEOUT)


async def _wait(
    call: Call, channels: list[str], members: list[str], since: int, heartbeat: float, grant: Grant | None
) -> list[StoredMessage]:
    state = call.state
    wake = state.store.watch(channels)
    uuid = call.uuid
    poll = Poll(call.request.transport, wake, uuid, tuple(members))
    state.add_poll(poll, grant)
    try:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(wake), state.limits.subscribe_timeout)
    finally:
        state.remove_poll(poll)
        state.store.unwatch(channels, wake)
        if uuid is not None:
            state.presence.poll_closed(members, uuid, heartbeat)
    if poll.dropped:
        # The connection is already gone; nothing reaches the client.
        raise asyncio.CancelledError
    if poll.refusal is not None:
        # Its token was revoked or expired while it waited: whatever came since is not for it.
        raise poll.refusal
    return state.store.since(channels, since, state.limits.max_messages_per_poll)


def state_param(call: Call) -> dict[str, Any] | None:
    raw = call.query.get("state")
    if not raw:
        return None
    if len(raw.encode()) > MAX_STATE_BYTES:
        raise service_error(400, f"Invalid state: larger than {MAX_STATE_BYTES} bytes", "Presence")
    try:
        value = loads(raw)
    except JsonInputError as error:
        raise service_error(400, f"Invalid state: {error}", "Presence") from None
    return value if isinstance(value, dict) else None


def _envelope(
    call: Call, timetoken: int, messages: list[StoredMessage], channels: list[str]
) -> web.StreamResponse:
    subscribe_key = call.state.keys.subscribe_key
    wire = [
        wire_message(m, subscribe_key, subscription_for(m.channel, channels) or m.channel) for m in messages
    ]
    return json_response({"t": {"t": str(timetoken), "r": REGION}, "m": wire})


def wire_message(
    message: StoredMessage, subscribe_key: str, subscription: str | None = None
) -> dict[str, Any]:
    """A message as the subscribe answer carries it (the SDKs need ``f``, ``k``, ``p.t`` and ``p.r``).

    ``b`` is the subscription that brought it (a wildcard, or the channel itself): the JavaScript
    SDK drops an entry whose ``b`` it did not subscribe to.
    """
    wire: dict[str, Any] = {
        "a": "1",
        "f": 0,
        "p": {"t": str(message.timetoken), "r": REGION},
        "k": subscribe_key,
        "c": message.channel,
        "b": subscription or message.channel,
        "d": message.payload,
    }
    if message.publisher is not None:
        wire["i"] = message.publisher
    if message.meta is not None:
        wire["u"] = message.meta
    if message.message_type:
        wire["e"] = message.message_type
    if message.custom_message_type is not None:
        wire["cmt"] = message.custom_message_type
    return wire
