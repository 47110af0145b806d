"""Decoding PubNub subscribe answers into envelopes and presence events (pure, no I/O).

The SDK's own subscribe worker dies silently on App Context (``e=2``) and file
(``e=4``) events, so the bus reads the raw answer itself. Each message either decodes
or is dropped with a reason that names what was wrong; nothing here raises on bad
input from the network.
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from telehealth_client.logs import describe_exception
from telehealth_client.protocol.channels import PRESENCE_SUFFIX
from telehealth_client.pubsub import bounded_json
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


class UndecodableError(ValueError):
    """One message that cannot be delivered; the message is the reason, never the content."""


def _int(value: Any) -> int | None:
    if isinstance(value, bool) or (isinstance(value, float) and not math.isfinite(value)):
        return None  # int(1e999) raises OverflowError; a boolean is not a count
    try:
        return int(value)
    except (TypeError, ValueError, OverflowError):
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
    """One subscribe answer entry; anything that goes wrong is a Dropped, never an exception."""
    try:
        return _decode_entry(item, decryptor)
    except Exception as exc:  # a bug or a case not foreseen: one entry must not stop the bus
        channel = item.get("c") if isinstance(item, Mapping) else None
        return Dropped(
            channel if isinstance(channel, str) else None,
            f"entry could not be decoded: {describe_exception(exc)}",
        )


def _decode_entry(item: Any, decryptor: Decryptor | None) -> Envelope | PresenceEvent | Dropped:
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
    return decode_message(channel, payload, timetoken, item.get("i"), item.get("u"), decryptor)


def decode_message(
    channel: str, payload: Any, timetoken: int, publisher: Any, meta: Any, decryptor: Decryptor | None
) -> Envelope | Dropped:
    """A message's payload, from a subscribe answer or history, checked and decrypted."""
    try:
        message = _decode_payload(payload, decryptor)
        checked_meta = meta if isinstance(meta, Mapping) else None
        if checked_meta is not None:
            bounded_json.check_value(checked_meta)
    except bounded_json.JsonLimitError as exc:
        return Dropped(channel, f"message meta refused: {exc}")
    except UndecodableError as exc:
        return Dropped(channel, str(exc))
    except Exception as exc:  # not foreseen: dropped with the type and place, never the content
        return Dropped(channel, f"message could not be decoded: {describe_exception(exc)}")
    return Envelope(
        channel=channel,
        message=message,
        publisher=publisher if isinstance(publisher, str) else None,
        timetoken=timetoken,
        meta=checked_meta,
    )


def decode_history_item(
    channel: str, payload: Any, timetoken: Any, publisher: Any, meta: Any, decryptor: Decryptor | None
) -> Envelope | Dropped:
    """One stored message from a history page; anything wrong is a Dropped, never an exception."""
    checked = _int(timetoken)
    if checked is None:
        return Dropped(channel, "stored message has no timetoken")
    return decode_message(channel, payload, checked, publisher, meta, decryptor)


def _decode_payload(payload: Any, decryptor: Decryptor | None) -> Any:
    if isinstance(payload, str):
        size = len(payload.encode("utf-8", "surrogatepass")) + 2  # as a quoted JSON string
    else:
        try:
            bounded_json.check_value(payload)
        except bounded_json.JsonLimitError as exc:
            raise UndecodableError(f"message refused: {exc}") from None
        size = len(json.dumps(payload, separators=(",", ":"))) if payload is not None else 0
    if size > MAX_MESSAGE_BYTES:
        raise UndecodableError(f"message is {size} bytes, over the {MAX_MESSAGE_BYTES}-byte limit")
    if decryptor is not None:
        try:
            return decryptor.decrypt(payload)
        except ValueError as exc:
            # Clear text where ciphertext belongs is refused, never passed on.
            raise UndecodableError(f"message is not readable ciphertext: {exc}") from None
    if isinstance(payload, str):
        with contextlib.suppress(ValueError):  # a plain string message stays a string
            return bounded_json.loads(payload)
    return payload


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
