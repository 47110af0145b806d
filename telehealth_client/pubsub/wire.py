"""Decoding PubNub subscribe answers into envelopes and presence events (pure, no I/O).

The SDK's own subscribe worker dies silently on App Context (``e=2``) and file
(``e=4``) events, so the bus reads the raw answer itself. Each message either decodes
or is dropped with a reason that names what was wrong; nothing here raises on bad
input from the network.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from telehealth_client.protocol.channels import PRESENCE_SUFFIX
from telehealth_client.pubsub.bus import MAX_MESSAGE_BYTES, Envelope, PresenceEvent

# PubNub's `e` field: what kind of event a subscribe answer entry is.
MESSAGE_TYPE_MESSAGE = 0
MESSAGE_TYPE_SIGNAL = 1
MESSAGE_TYPE_OBJECTS = 2
MESSAGE_TYPE_ACTION = 3
MESSAGE_TYPE_FILE = 4


class Decryptor(Protocol):
    def decrypt(self, message: Any) -> Any: ...


@dataclass(frozen=True)
class Dropped:
    """An entry that was not delivered, and why. ``channel`` may be unknown."""

    channel: str | None
    reason: str
    ignorable: bool = False  # an event kind we do not use (App Context, file, action): not a warning


@dataclass(frozen=True)
class SubscribeAnswer:
    timetoken: int
    region: int
    entries: list[Envelope | PresenceEvent | Dropped]


class MalformedAnswerError(ValueError):
    """The subscribe answer as a whole has no usable timetoken."""


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def parse_subscribe_answer(raw: Any, decryptor: Decryptor | None) -> SubscribeAnswer:
    """Decode one subscribe answer; raise MalformedAnswerError only when its cursor is unusable."""
    if not isinstance(raw, Mapping):
        raise MalformedAnswerError("subscribe answer is not a JSON object")
    cursor = raw.get("t")
    if not isinstance(cursor, Mapping) or _int(cursor.get("t")) is None:
        raise MalformedAnswerError("subscribe answer has no timetoken 't.t'")
    timetoken = _int(cursor.get("t")) or 0
    region = _int(cursor.get("r")) or 0
    items = raw.get("m") or []
    if not isinstance(items, list):
        raise MalformedAnswerError("subscribe answer field 'm' is not a list")
    return SubscribeAnswer(timetoken, region, [decode_entry(item, decryptor) for item in items])


def decode_entry(item: Any, decryptor: Decryptor | None) -> Envelope | PresenceEvent | Dropped:
    if not isinstance(item, Mapping):
        return Dropped(None, "entry is not a JSON object")
    channel = item.get("c")
    if not isinstance(channel, str) or not channel:
        return Dropped(None, "entry has no channel 'c'")
    published = item.get("p")
    timetoken = _int(published.get("t")) if isinstance(published, Mapping) else None
    if timetoken is None:
        return Dropped(channel, "entry has no publish timetoken 'p.t'")
    kind = _int(item.get("e")) or MESSAGE_TYPE_MESSAGE
    if kind in (MESSAGE_TYPE_OBJECTS, MESSAGE_TYPE_ACTION, MESSAGE_TYPE_FILE):
        return Dropped(channel, f"event type {kind} is not used by this agent", ignorable=True)
    if kind != MESSAGE_TYPE_MESSAGE:
        # Signals are never encrypted by the SDKs and this agent uses none: a signal carrying
        # a chat or an offer would be clear text passing for a message.
        return Dropped(channel, f"event type {kind} (signal) is not accepted by this agent")
    payload = item.get("d")
    if channel.endswith(PRESENCE_SUFFIX):
        return _decode_presence(channel.removesuffix(PRESENCE_SUFFIX), payload, timetoken)
    size = len(json.dumps(payload, separators=(",", ":"))) if payload is not None else 0
    if size > MAX_MESSAGE_BYTES:
        return Dropped(channel, f"message is {size} bytes, over the {MAX_MESSAGE_BYTES}-byte limit")
    if decryptor is not None:
        try:
            payload = decryptor.decrypt(payload)
        except ValueError as exc:
            # Clear text where ciphertext belongs is refused, never passed on.
            return Dropped(channel, f"message is not readable ciphertext: {exc}")
    elif isinstance(payload, str):
        with contextlib.suppress(ValueError):  # a plain string message stays a string
            payload = json.loads(payload)
    publisher = item.get("i")
    meta = item.get("u")
    return Envelope(
        channel=channel,
        message=payload,
        publisher=publisher if isinstance(publisher, str) else None,
        timetoken=timetoken,
        meta=meta if isinstance(meta, Mapping) else None,
    )


def _decode_presence(channel: str, payload: Any, timetoken: int) -> PresenceEvent | Dropped:
    if not isinstance(payload, Mapping) or not isinstance(payload.get("action"), str):
        return Dropped(channel, "presence event has no 'action'")
    user_id = payload.get("uuid")
    return PresenceEvent(
        channel=channel,
        action=payload["action"],
        user_id=user_id if isinstance(user_id, str) else None,
        occupancy=_int(payload.get("occupancy")),
        timetoken=timetoken,
    )
