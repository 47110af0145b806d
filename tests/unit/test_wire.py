import json

import pytest

from telehealth_client.pubsub.bus import Envelope, PresenceEvent
from telehealth_client.pubsub.crypto import RotatingCryptoModule
from telehealth_client.pubsub.wire import Dropped, MalformedAnswerError, parse_subscribe_answer

CRYPTO = RotatingCryptoModule("wire-test-key")


def entry(payload: object, *, channel: str = "consultation.dr-a.pat-b", kind: int | None = None) -> dict:
    item = {"a": "1", "f": 0, "i": "dr-a", "p": {"t": "17000000000000001", "r": 1}, "k": "sub", "c": channel}
    item["d"] = payload
    if kind is not None:
        item["e"] = kind
    return item


def answer(*items: dict) -> dict:
    return {"t": {"t": "17000000000000009", "r": 3}, "m": list(items)}


def test_decrypts_a_message_into_an_envelope() -> None:
    ciphertext = CRYPTO.encrypt(json.dumps({"type": "chat", "text": "hi"}))
    parsed = parse_subscribe_answer(answer(entry(ciphertext) | {"u": {"k": 1}}), CRYPTO)
    assert (parsed.timetoken, parsed.region) == (17000000000000009, 3)
    assert parsed.entries == [
        Envelope(
            "consultation.dr-a.pat-b", {"type": "chat", "text": "hi"}, "dr-a", 17000000000000001, {"k": 1}
        )
    ]


def test_clear_text_on_an_encrypted_bus_is_dropped() -> None:
    parsed = parse_subscribe_answer(answer(entry({"type": "chat", "text": "forged"})), CRYPTO)
    [dropped] = parsed.entries
    assert isinstance(dropped, Dropped)
    assert "not readable ciphertext" in dropped.reason
    assert not dropped.ignorable


@pytest.mark.parametrize(("kind", "ignorable"), [(2, True), (3, True), (4, True)])
def test_app_context_action_and_file_events_are_skipped_quietly(kind: int, ignorable: bool) -> None:
    [dropped] = parse_subscribe_answer(answer(entry({"event": "set"}, kind=kind)), CRYPTO).entries
    assert isinstance(dropped, Dropped) and dropped.ignorable is ignorable


def test_oversized_and_shapeless_entries_are_dropped_with_reasons() -> None:
    big = entry("x" * 40_000)
    no_channel = {"d": "x", "p": {"t": "1"}}
    no_timetoken = {"c": "ch", "d": "x"}
    reasons = [
        e.reason
        for e in parse_subscribe_answer(answer(big, no_channel, no_timetoken, "junk"), CRYPTO).entries
    ]
    assert "over the 32768-byte limit" in reasons[0]
    assert reasons[1:] == [
        "entry has no channel 'c'",
        "entry has no publish timetoken 'p.t'",
        "entry is not a JSON object",
    ]


def test_presence_events_are_decoded_without_decryption() -> None:
    item = entry(
        {"action": "join", "uuid": "pat-b", "occupancy": 2, "timestamp": 1}, channel="consultation.x.y-pnpres"
    )
    [event] = parse_subscribe_answer(answer(item), CRYPTO).entries
    assert event == PresenceEvent("consultation.x.y", "join", "pat-b", 2, 17000000000000001)


def test_unencrypted_bus_passes_json_through() -> None:
    [env] = parse_subscribe_answer(answer(entry({"a": 1})), None).entries
    assert isinstance(env, Envelope) and env.message == {"a": 1}


@pytest.mark.parametrize("raw", [None, [], {"m": []}, {"t": {"t": "soon"}}, {"t": {"t": "1"}, "m": "x"}])
def test_an_answer_without_a_cursor_is_malformed(raw: object) -> None:
    with pytest.raises(MalformedAnswerError):
        parse_subscribe_answer(raw, CRYPTO)


def test_signals_are_refused_even_without_encryption() -> None:
    for decryptor in (CRYPTO, None):
        [dropped] = parse_subscribe_answer(answer(entry({"type": "chat"}, kind=1)), decryptor).entries
        assert isinstance(dropped, Dropped) and "signal" in dropped.reason and not dropped.ignorable


def deep(levels: int) -> str:
    return "[" * levels + "]" * levels


def test_deeply_nested_ciphertext_is_dropped_and_the_next_entry_delivered() -> None:
    bomb = entry(CRYPTO.encrypt(deep(6000)))
    good = entry(CRYPTO.encrypt(json.dumps({"n": 1})))
    dropped, envelope = parse_subscribe_answer(answer(bomb, good), CRYPTO).entries
    assert isinstance(dropped, Dropped) and "deeper than 64 levels" in dropped.reason
    assert isinstance(envelope, Envelope) and envelope.message == {"n": 1}


def test_non_finite_numbers_in_ciphertext_are_dropped() -> None:
    for text in ('{"n": NaN}', '{"n": Infinity}', '{"n": 1e999}'):
        [dropped] = parse_subscribe_answer(answer(entry(CRYPTO.encrypt(text))), CRYPTO).entries
        assert isinstance(dropped, Dropped) and "not readable ciphertext" in dropped.reason


def test_infinite_occupancy_is_read_as_unknown() -> None:
    item = entry({"action": "join", "uuid": "pat-b", "occupancy": float("inf")}, channel="c.x-pnpres")
    [event] = parse_subscribe_answer(answer(item), CRYPTO).entries
    assert isinstance(event, PresenceEvent) and event.occupancy is None


def test_too_deep_meta_and_clear_payloads_are_dropped() -> None:
    nested: list[object] = []
    for _ in range(100):
        nested = [nested]
    deep_meta = entry(CRYPTO.encrypt("{}")) | {"u": {"k": nested}}
    [dropped] = parse_subscribe_answer(answer(deep_meta), CRYPTO).entries
    assert isinstance(dropped, Dropped) and "deeper than 64 levels" in dropped.reason
    [clear] = parse_subscribe_answer(answer(entry(nested)), None).entries
    assert isinstance(clear, Dropped) and "deeper than 64 levels" in clear.reason


class Exploding:
    def decrypt(self, message: object) -> object:
        raise RuntimeError("a decryptor bug")


def test_an_unforeseen_failure_drops_the_entry_with_its_type() -> None:
    [dropped] = parse_subscribe_answer(answer(entry("abc")), Exploding()).entries
    assert isinstance(dropped, Dropped)
    assert dropped.channel == "consultation.dr-a.pat-b"
    assert dropped.reason.startswith("message could not be decoded: RuntimeError at ")
