"""publish_size: the bytes PubNub counts against its 32 KiB limit, measured before anything is sent."""

from __future__ import annotations

import json

import pytest

from telehealth_client.pubsub.bus import BusError
from telehealth_client.pubsub.crypto import RotatingCryptoModule, encrypted_size
from telehealth_client.pubsub.pubnub_bus import publish_size


def test_clear_text_is_the_sdks_json_plus_the_channel_name() -> None:
    message = {"type": "chat", "n": [1, 2]}
    assert publish_size("consultation.a.b", message, encrypted=False) == len(json.dumps(message)) + 16


def test_the_channel_name_is_counted_in_utf_8_bytes() -> None:
    # The JSON body is ASCII (the SDK escapes non-ASCII); a channel name is not escaped.
    assert publish_size("é", "é", encrypted=False) == len('"\\u00e9"') + 2


def test_encrypted_it_is_the_size_of_the_ciphertext_string() -> None:
    message = {"text": "x" * 100}
    body = json.dumps(message)
    ciphertext = RotatingCryptoModule("k").encrypt(body)
    measured = publish_size("ch", message, encrypted=True)
    assert measured == encrypted_size(len(body)) + 2 == len(json.dumps(ciphertext)) + 2


@pytest.mark.parametrize("message", [{"when": object()}, {1j}, b"bytes"])
def test_what_json_cannot_carry_is_refused_for_good(message: object) -> None:
    with pytest.raises(BusError) as refused:
        publish_size("ch", message, encrypted=False)
    assert str(refused.value) == "publish: message is not JSON-serialisable"
    assert refused.value.retryable is False


def test_a_non_finite_number_is_refused_with_the_reason() -> None:
    with pytest.raises(BusError) as refused:
        publish_size("ch", {"n": float("nan")}, encrypted=True)
    assert str(refused.value) == "publish: message refused: JSON number is not finite"
    assert refused.value.retryable is False
