"""What a subscribe answer decodes into, exactly: the reason and channel of every drop, the
boundaries of the size limit and the cursor's defaults (mutants that survived test_wire.py changed
a reason, lost a drop's channel or moved a bound and nothing noticed)."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from telehealth_client.pubsub.bus import MAX_MESSAGE_BYTES, Envelope, PresenceEvent
from telehealth_client.pubsub.crypto import RotatingCryptoModule
from telehealth_client.pubsub.wire import (
    Dropped,
    MalformedAnswerError,
    decode_entry,
    decode_history_item,
    parse_subscribe_answer,
)

CRYPTO = RotatingCryptoModule("wire-mutants-key")
CHANNEL = "consultation.dr-a.pat-b"


def entry(payload: object = None, **fields: object) -> dict[str, Any]:
    item: dict[str, Any] = {"c": CHANNEL, "p": {"t": "17000000000000001"}, "d": payload}
    item.update(fields)
    return item


def decoded(item: object, decryptor: RotatingCryptoModule | None = None) -> object:
    [result] = parse_subscribe_answer({"t": {"t": "5"}, "m": [item]}, decryptor).entries
    return result


# The answer as a whole: its cursor, its region, its list of entries.


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (None, "subscribe answer is not a JSON object"),
        ([{"t": {"t": "1"}}], "subscribe answer is not a JSON object"),
        ({"m": []}, "subscribe answer has no timetoken 't.t'"),
        ({"t": "17000000000000009"}, "subscribe answer has no timetoken 't.t'"),
        ({"t": {"t": True}}, "subscribe answer has no timetoken 't.t'"),
        ({"t": {"t": float("nan")}}, "subscribe answer has no timetoken 't.t'"),
        ({"t": {"t": "1"}, "m": "x"}, "subscribe answer field 'm' is not a list"),
        ({"t": {"t": "1"}, "m": {"c": "x"}}, "subscribe answer field 'm' is not a list"),
    ],
)
def test_a_malformed_answer_says_which_field_is_wrong(raw: object, reason: str) -> None:
    with pytest.raises(MalformedAnswerError) as caught:
        parse_subscribe_answer(raw, None)
    assert str(caught.value) == reason


def test_a_zero_cursor_and_a_missing_region_are_zero() -> None:
    # The very first subscribe answers with timetoken 0; it is a cursor, not a missing one.
    parsed = parse_subscribe_answer({"t": {"t": "0"}}, None)
    assert (parsed.timetoken, parsed.region, parsed.entries) == (0, 0, [])
    for region in ("junk", None, True):
        assert parse_subscribe_answer({"t": {"t": 7, "r": region}, "m": None}, None).region == 0


# Each entry: dropped with its channel (when known) and the exact reason.


@pytest.mark.parametrize(
    ("item", "expected"),
    [
        ("junk", Dropped(None, "entry is not a JSON object")),
        (entry(c=""), Dropped(None, "entry has no channel 'c'")),
        (entry(c=5), Dropped(None, "entry has no channel 'c'")),
        ({"p": {"t": "1"}, "d": 1}, Dropped(None, "entry has no channel 'c'")),
        (entry(p=None), Dropped(CHANNEL, "entry has no publish timetoken 'p.t'")),
        (entry(p="17000000000000001"), Dropped(CHANNEL, "entry has no publish timetoken 'p.t'")),
        (entry(p={"t": "soon"}), Dropped(CHANNEL, "entry has no publish timetoken 'p.t'")),
        (entry(p={"t": False}), Dropped(CHANNEL, "entry has no publish timetoken 'p.t'")),
        (entry(e=2), Dropped(CHANNEL, "event type 2 is not used by this agent", ignorable=True)),
        (entry(e="3"), Dropped(CHANNEL, "event type 3 is not used by this agent", ignorable=True)),
        (entry(e=4), Dropped(CHANNEL, "event type 4 is not used by this agent", ignorable=True)),
        (entry(e=1), Dropped(CHANNEL, "event type 1 (signal) is not accepted by this agent")),
        (entry(e=7), Dropped(CHANNEL, "event type 7 (signal) is not accepted by this agent")),
        (entry(None, c="lobby-pnpres"), Dropped("lobby", "presence event has no 'action'")),
        (entry({"action": 1}, c="lobby-pnpres"), Dropped("lobby", "presence event has no 'action'")),
        (entry({"uuid": "pat-b"}, c="lobby-pnpres"), Dropped("lobby", "presence event has no 'action'")),
    ],
)
def test_each_drop_names_its_channel_and_reason(item: object, expected: Dropped) -> None:
    assert decoded(item) == expected
    assert decoded(item, CRYPTO) == expected


def test_a_zero_publish_timetoken_is_a_timetoken() -> None:
    assert decoded(entry({"n": 1}, p={"t": 0})) == Envelope(CHANNEL, {"n": 1}, None, 0)


@pytest.mark.parametrize("kind", [None, 0, "0", True, "junk", [2]])
def test_an_absent_or_unreadable_event_type_is_a_message(kind: object) -> None:
    assert decoded(entry({"n": 1}, e=kind)) == Envelope(CHANNEL, {"n": 1}, None, 17000000000000001)


def test_a_presence_event_keeps_only_what_has_the_right_type() -> None:
    event = decoded(entry({"action": "leave", "uuid": 42, "occupancy": "3"}, c="lobby-pnpres"), CRYPTO)
    assert event == PresenceEvent("lobby", "leave", None, 3, 17000000000000001)


@pytest.mark.parametrize(
    ("occupancy", "read"), [(True, None), ("x", None), ([1], None), (2.0, 2), (None, None)]
)
def test_occupancy_is_a_count_or_unknown(occupancy: object, read: int | None) -> None:
    event = decoded(entry({"action": "join", "occupancy": occupancy}, c="lobby-pnpres"))
    assert isinstance(event, PresenceEvent) and event.occupancy == read


def test_publisher_and_meta_are_kept_only_with_the_right_type() -> None:
    ciphertext = CRYPTO.encrypt('{"n": 1}')
    kept = decoded(entry(ciphertext, i="dr-a", u={"k": [1]}), CRYPTO)
    assert kept == Envelope(CHANNEL, {"n": 1}, "dr-a", 17000000000000001, {"k": [1]})
    for publisher, meta in ((7, "meta"), (None, [1]), (["dr-a"], 3)):
        dropped_fields = decoded(entry(ciphertext, i=publisher, u=meta), CRYPTO)
        assert dropped_fields == Envelope(CHANNEL, {"n": 1}, None, 17000000000000001, None)


@pytest.mark.parametrize(
    ("meta", "reason"),
    [
        ({"k": float("nan")}, "message meta refused: JSON number is not finite"),
        ({"k": json.loads("[" * 80 + "]" * 80)}, "message meta refused: JSON nests deeper than 64 levels"),
    ],
)
def test_meta_beyond_the_bounds_drops_the_message(meta: object, reason: str) -> None:
    assert decoded(entry(CRYPTO.encrypt("1"), u=meta), CRYPTO) == Dropped(CHANNEL, reason)


# The payload: size limit, bounds, decryption.


def test_a_string_payload_is_measured_in_utf8_bytes_with_its_quotes() -> None:
    fits = "é" * ((MAX_MESSAGE_BYTES - 2) // 2)  # two bytes each, plus the two quotes: exactly the limit
    assert decoded(entry(fits)) == Envelope(CHANNEL, fits, None, 17000000000000001)
    over = fits + "x"
    assert decoded(entry(over)) == Dropped(CHANNEL, "message is 32769 bytes, over the 32768-byte limit")
    assert decoded(entry(over), CRYPTO) == Dropped(
        CHANNEL, "message is 32769 bytes, over the 32768-byte limit"
    )


def test_a_lone_surrogate_in_a_string_payload_is_measured_not_fatal() -> None:
    assert decoded(entry("\ud800")) == Envelope(CHANNEL, "\ud800", None, 17000000000000001)


def test_a_json_payload_is_measured_as_compact_json() -> None:
    # ["x...x"] is the string plus four characters; with spaces it would measure more.
    fits = {"k": ["x" * (MAX_MESSAGE_BYTES - 12), 1]}  # {"k":["...",1]} adds 12
    assert len(json.dumps(fits, separators=(",", ":"))) == MAX_MESSAGE_BYTES
    assert decoded(entry(fits)) == Envelope(CHANNEL, fits, None, 17000000000000001)
    over = {"k": ["x" * (MAX_MESSAGE_BYTES - 11), 1]}
    assert decoded(entry(over)) == Dropped(CHANNEL, "message is 32769 bytes, over the 32768-byte limit")


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        ({"n": float("inf")}, "message refused: JSON number is not finite"),
        (json.loads("[" * 65 + "]" * 65), "message refused: JSON nests deeper than 64 levels"),
    ],
)
def test_a_payload_beyond_the_bounds_is_refused_before_decryption(payload: object, reason: str) -> None:
    assert decoded(entry(payload)) == Dropped(CHANNEL, reason)
    assert decoded(entry(payload), CRYPTO) == Dropped(CHANNEL, reason)


def test_a_payload_64_deep_is_delivered() -> None:
    payload = json.loads("[" * 64 + "]" * 64)
    assert decoded(entry(payload)) == Envelope(CHANNEL, payload, None, 17000000000000001)


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (None, "payload is not an encrypted string"),
        ({"type": "chat"}, "payload is not an encrypted string"),
        ("hello there", "payload is not base64"),
        (
            CRYPTO.encrypt(json.dumps({"n": float("nan")})),
            "decrypted JSON refused: JSON constant NaN is not a number this agent accepts",
        ),
    ],
    ids=["none", "not-a-string", "not-base64", "nan-inside"],  # a ciphertext differs at every run
)
def test_unreadable_ciphertext_is_dropped_with_the_decryption_reason(payload: object, reason: str) -> None:
    expected = Dropped(CHANNEL, f"message is not readable ciphertext: {reason}")
    assert decoded(entry(payload), CRYPTO) == expected


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ('{"type": "chat"}', {"type": "chat"}),
        ("hello there", "hello there"),  # not JSON: a plain string message stays a string
        ("NaN", "NaN"),  # JSON the bounds refuse stays the string it was sent as
        (None, None),
        (12, 12),
    ],
)
def test_on_a_clear_bus_strings_holding_json_are_decoded(payload: object, message: object) -> None:
    assert decoded(entry(payload)) == Envelope(CHANNEL, message, None, 17000000000000001)


# History items.


@pytest.mark.parametrize("timetoken", [None, "soon", True, float("inf")])
def test_a_stored_message_without_a_timetoken_is_dropped(timetoken: object) -> None:
    assert decode_history_item(CHANNEL, "x", timetoken, None, None, None) == Dropped(
        CHANNEL, "stored message has no timetoken"
    )


def test_a_stored_message_is_decoded_as_a_live_one() -> None:
    item = decode_history_item(CHANNEL, CRYPTO.encrypt("[1]"), "0", "dr-a", {"k": 1}, CRYPTO)
    assert item == Envelope(CHANNEL, [1], "dr-a", 0, {"k": 1})


# An entry that breaks the decoder in a way nobody foresaw.


class FailingLookups(Mapping[str, Any]):
    """Not something JSON produces: a mapping whose 'e' lookup fails, standing for a decoder bug."""

    def __init__(self, fields: dict[str, Any]) -> None:
        self._fields = fields

    def __getitem__(self, key: str) -> Any:
        if key == "e":
            raise LookupError("boom")
        return self._fields[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._fields)

    def __len__(self) -> int:
        return len(self._fields)

    def get(self, key: str, default: Any = None) -> Any:
        return self[key] if key in self._fields or key == "e" else default


def test_an_entry_that_breaks_the_decoder_is_dropped_with_its_channel_and_the_error_type() -> None:
    dropped = decode_entry(FailingLookups(entry("x")), None)
    assert isinstance(dropped, Dropped)
    assert dropped.channel == CHANNEL
    assert dropped.reason.startswith(f"entry could not be decoded: LookupError at {Path(__file__).name}:")
    assert not dropped.ignorable
