"""Message history: fetch (v3, with and without actions), the older v2 history, and delete."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from .access import Need, Permission
from .errors import service_error
from .http import Call, json_response
from .store import MESSAGE, StoredMessage, select_history

_SINGLE_MAX = 100
_MULTI_MAX = 25


def _key_and_channels(call: Call) -> list[str]:
    # /v{2,3}/history[-with-actions]/sub-key/{sub}/channel/{channels}
    if call.segments[3] != call.state.keys.subscribe_key:
        raise service_error(400, "Invalid Subscribe Key", "Storage")
    channels = [c for c in call.segments[5].split(",") if c]
    if not channels:
        raise service_error(400, "No channel given", "Storage")
    return channels


def _int_param(call: Call, name: str) -> int | None:
    raw = call.query.get(name)
    if raw is None or raw == "":
        return None
    try:
        return int(raw)
    except ValueError:
        raise service_error(400, f"Invalid {name}: not an integer", "Storage") from None


def _flag(call: Call, name: str, default: bool) -> bool:
    raw = call.query.get(name)
    return default if raw is None else raw.lower() == "true"


async def fetch(call: Call) -> web.StreamResponse:
    channels = _key_and_channels(call)
    with_actions = call.segments[1] == "history-with-actions"
    if with_actions and len(channels) > 1:
        raise service_error(400, "History with actions takes one channel", "Storage")
    call.authorize([Need("chan", c, Permission.READ) for c in channels])
    cap = _SINGLE_MAX if len(channels) == 1 and not with_actions else _MULTI_MAX
    limit = _int_param(call, "max") or cap
    limit = max(1, min(limit, cap))
    start, end = _int_param(call, "start"), _int_param(call, "end")
    include_meta = _flag(call, "include_meta", False)
    include_uuid = _flag(call, "include_uuid", True)
    include_type = _flag(call, "include_message_type", False)
    include_custom_type = _flag(call, "include_custom_message_type", False)

    def item(message: StoredMessage) -> dict[str, Any]:
        # As PubNub answers: timetoken as a string, meta "" when there is none.
        entry: dict[str, Any] = {"message": message.payload, "timetoken": str(message.timetoken)}
        if include_uuid and message.publisher is not None:
            entry["uuid"] = message.publisher
        if include_meta:
            entry["meta"] = message.meta if message.meta is not None else ""
        if include_type:
            entry["message_type"] = message.message_type if message.message_type != MESSAGE else None
        if include_custom_type:
            entry["custom_message_type"] = message.custom_message_type
        if with_actions:
            entry["actions"] = {}
        return entry

    found: dict[str, list[dict[str, Any]]] = {}
    for channel in channels:
        chosen = select_history(call.state.store.history(channel), start, end, limit)
        if chosen:
            found[channel] = [item(m) for m in chosen]
    return json_response({"status": 200, "error": False, "error_message": "", "channels": found})


async def history_v2(call: Call) -> web.StreamResponse:
    channels = _key_and_channels(call)
    if len(channels) != 1:
        raise service_error(400, "History takes one channel", "Storage")
    channel = channels[0]
    call.authorize([Need("chan", channel, Permission.READ)])
    count = max(1, min(_int_param(call, "count") or _SINGLE_MAX, _SINGLE_MAX))
    start, end = _int_param(call, "start"), _int_param(call, "end")
    messages = select_history(call.state.store.history(channel), start, end, 10**9)
    chosen = messages[:count] if _flag(call, "reverse", False) else messages[-count:]
    with_token = _flag(call, "include_token", False)
    with_meta = _flag(call, "include_meta", False)
    items: list[Any] = []
    for message in chosen:
        if with_token or with_meta:
            entry: dict[str, Any] = {"message": message.payload}
            if with_token:
                entry["timetoken"] = message.timetoken
            if with_meta:
                entry["meta"] = message.meta if message.meta is not None else ""
            items.append(entry)
        else:
            items.append(message.payload)
    first = chosen[0].timetoken if chosen else 0
    last = chosen[-1].timetoken if chosen else 0
    return json_response([items, first, last])


async def delete(call: Call) -> web.StreamResponse:
    channels = _key_and_channels(call)
    if len(channels) != 1:
        raise service_error(400, "Delete takes one channel", "Storage")
    call.authorize([Need("chan", channels[0], Permission.DELETE)])
    call.state.store.delete_history(channels[0], _int_param(call, "start"), _int_param(call, "end"))
    return json_response({"status": 200, "error": False, "error_message": ""})
