"""Presence REST calls: heartbeat, leave, here_now."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from .access import Grant, Need, Permission
from .errors import service_error
from .http import Call, json_response
from .pubsub import presence_timeout, state_param
from .wildcard import presence_members

_OK = {"status": 200, "message": "OK", "service": "Presence"}


def _channels(call: Call) -> tuple[list[str], Grant | None]:
    """The channels the request names (with their presence members) and the token that let it in."""
    # /v2/presence/sub-key/{sub}/channel/{channels}[/heartbeat|/leave]
    if call.segments[3] != call.state.keys.subscribe_key:
        raise service_error(400, "Invalid Subscribe Key", "Presence")
    if call.query.get("channel-group"):
        raise service_error(400, "Channel groups are not supported by the development relay", "Presence")
    channels = [c for c in call.segments[5].split(",") if c] if len(call.segments) > 5 else []
    grant = call.authorize([Need("chan", c, Permission.READ) for c in channels])
    return presence_members(channels), grant


async def heartbeat(call: Call) -> web.StreamResponse:
    channels, grant = _channels(call)
    if call.uuid is None:
        raise service_error(400, "Missing uuid", "Presence")
    call.state.presence.heartbeat(channels, call.uuid, presence_timeout(call), state_param(call))
    if grant is not None:
        # Its presence ends with the token (revoked or expired), not at the presence timeout.
        call.state.held.heartbeat(grant, call.uuid, channels)
    return json_response(_OK)


async def leave(call: Call) -> web.StreamResponse:
    channels, _ = _channels(call)
    if call.uuid is not None:
        call.state.presence.leave(channels, call.uuid)
    return json_response({**_OK, "action": "leave"})


async def here_now(call: Call) -> web.StreamResponse:
    presence = call.state.presence
    if len(call.segments) > 5:
        channels, _ = _channels(call)
    else:
        _channels(call)  # global here_now: the key check
        # PubNub's global here_now checks no permission at all (and is off on new keysets):
        # with enforcement on it would show any token holder every consultation and everyone
        # waiting, so only a request signed with the secret key may list every channel.
        call.require_signature_when_enforced()
        channels = presence.channels()
    with_uuids = call.query.get("disable_uuids") != "1"
    with_state = call.query.get("state") == "1"

    def occupancy(channel: str) -> dict[str, Any]:
        occupants = presence.occupants(channel)
        entry: dict[str, Any] = {"occupancy": len(occupants)}
        if with_uuids:
            if with_state:
                entry["uuids"] = [
                    {"uuid": u, "state": s} if s is not None else {"uuid": u} for u, s in occupants.items()
                ]
            else:
                entry["uuids"] = list(occupants)
        return entry

    if len(channels) == 1 and len(call.segments) > 5:
        return json_response({**_OK, **occupancy(channels[0])})
    per_channel = {c: occupancy(c) for c in channels}
    payload = {
        "channels": {c: e for c, e in per_channel.items() if e["occupancy"] > 0},
        "total_channels": sum(1 for e in per_channel.values() if e["occupancy"] > 0),
        "total_occupancy": sum(e["occupancy"] for e in per_channel.values()),
    }
    return json_response({**_OK, "payload": payload})
