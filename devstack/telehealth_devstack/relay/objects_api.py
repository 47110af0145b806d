"""App Context UUID metadata REST calls (``/v2/objects/{sub}/uuids/{uuid}``)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from .access import Need, Permission
from .errors import objects_error
from .http import Call, json_response
from .jsonin import JsonInputError, loads
from .objects import view
from .store import OBJECTS_EVENT


def _target(call: Call, permission: Permission) -> str:
    if call.segments[2] != call.state.keys.subscribe_key:
        raise objects_error(400, "Invalid subscribe key.")
    uuid = call.segments[4]
    if not uuid:
        raise objects_error(400, "Missing uuid.")
    call.authorize([Need("uuid", uuid, permission)])
    return uuid


def _include(call: Call) -> set[str]:
    return {part.strip() for part in call.query.get("include", "").split(",") if part.strip()}


async def get_uuid(call: Call) -> web.StreamResponse:
    uuid = _target(call, Permission.GET)
    entry = call.state.uuid_metadata.get(uuid)
    if entry is None:
        raise objects_error(404, "Requested object was not found.")
    return json_response({"status": 200, "data": view(entry, _include(call))})


async def set_uuid(call: Call) -> web.StreamResponse:
    uuid = _target(call, Permission.UPDATE)
    try:
        body = loads(call.body or "null")
    except JsonInputError as error:
        raise objects_error(400, f"Request body is not valid JSON: {error}.") from None
    entry = call.state.uuid_metadata.set(uuid, body)
    # PubNub tells subscribers of the channel named after the user ID (an ``e=2`` event).
    _announce(call, uuid, "set", view(entry, set()))
    return json_response({"status": 200, "data": view(entry, _include(call))})


async def remove_uuid(call: Call) -> web.StreamResponse:
    uuid = _target(call, Permission.DELETE)
    if call.state.uuid_metadata.remove(uuid):
        _announce(call, uuid, "delete", {"id": uuid})
    return json_response({"status": 200, "data": None})


def _announce(call: Call, uuid: str, event: str, data: dict[str, Any]) -> None:
    payload = {"source": "objects", "version": "2.0", "event": event, "type": "uuid", "data": data}
    call.state.deliver(uuid, payload, publisher=call.uuid, message_type=OBJECTS_EVENT, stored=False)
