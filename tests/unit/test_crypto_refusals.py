"""Why a payload is refused, exactly, and which keys are tried in which order (mutants that survived
test_crypto.py changed a reason, loosened the base64 check or stopped trying keys too early)."""

from __future__ import annotations

import hashlib
import json
from base64 import b64decode, b64encode

import pytest
from Cryptodome.Cipher import AES
from pubnub.crypto_core import CryptorPayload, PubNubAesCbcCryptor

from telehealth_client.pubsub.crypto import DecryptionError, RotatingCryptoModule, encrypted_size


def refusal(module: RotatingCryptoModule, payload: object) -> str:
    with pytest.raises(DecryptionError) as caught:
        module.decrypt(payload)
    return str(caught.value)


def pned(cryptor_id: bytes, iv: bytes, body: bytes) -> str:
    return b64encode(b"PNED\x01" + cryptor_id + bytes([len(iv)]) + iv + body).decode()


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (None, "payload is not an encrypted string"),
        (b"UE5FRA==", "payload is not an encrypted string"),
        ("not base64 at all!", "payload is not base64"),
        ("QUJ", "payload is not base64"),
        ("hello world, plain", "payload is not base64"),
        (b64encode(b"hello world, plain").decode(), "payload is not AES-CBC CryptoModule ciphertext"),
        (pned(b"LEGA", b"0" * 16, b"0" * 16), "payload is not AES-CBC CryptoModule ciphertext"),
        (pned(b"\xff\xfe\xfd\xfc", b"0" * 16, b"0" * 16), "payload has a malformed header"),
        (b64encode(b"PNED\x01AC").decode(), "payload has a malformed header"),
        (b64encode(b"PNED\x09ACRH\x10" + b"0" * 32).decode(), "payload has a malformed header"),
        (pned(b"ACRH", b"0" * 15, b"0" * 16), "payload has an IV that is not 16 bytes"),
        (pned(b"ACRH", b"0" * 17, b"0" * 16), "payload has an IV that is not 16 bytes"),
        (pned(b"ACRH", b"0" * 16, b""), "ciphertext has a wrong length"),
        (pned(b"ACRH", b"0" * 16, b"0" * 17), "ciphertext has a wrong length"),
        (pned(b"ACRH", b"0" * 16, b"0" * 15), "ciphertext has a wrong length"),
    ],
)
def test_each_refusal_says_exactly_why(payload: object, reason: str) -> None:
    assert refusal(RotatingCryptoModule("k"), payload) == reason


def test_ciphertext_with_characters_outside_base64_is_refused_not_cleaned_up() -> None:
    # A lenient decoder would drop the newline and read the message: what is not strictly
    # base64 did not come from an SDK and is refused.
    module = RotatingCryptoModule("k")
    ciphertext = module.encrypt('{"n": 1}')
    assert module.decrypt(ciphertext) == {"n": 1}
    assert refusal(module, ciphertext[:8] + "\n" + ciphertext[8:]) == "payload is not base64"


def test_an_empty_cipher_key_is_refused_by_name() -> None:
    with pytest.raises(ValueError) as caught:
        RotatingCryptoModule("")
    assert str(caught.value) == "cipher_key: must not be empty"


def test_empty_previous_keys_are_skipped_and_the_rest_kept_in_order() -> None:
    old = RotatingCryptoModule("key-q2")
    rotated = RotatingCryptoModule("key-q4", previous_keys=["", "key-q3", "", "key-q2"])
    assert rotated.key_count == 3
    assert rotated.decrypt(old.encrypt('["still readable"]')) == ["still readable"]


def test_a_message_no_key_opens_is_refused_with_the_same_reason_after_every_key() -> None:
    stranger = RotatingCryptoModule("someone-else")
    rotated = RotatingCryptoModule("key-q4", previous_keys=["key-q3"])
    assert refusal(rotated, stranger.encrypt('{"n": 1}')) == "no cipher key opens this payload"


def test_decrypted_json_beyond_a_bound_names_it() -> None:
    module = RotatingCryptoModule("k")
    assert refusal(module, module.encrypt("[" * 65 + "]" * 65)) == (
        "decrypted JSON refused: JSON nests deeper than 64 levels"
    )
    assert module.decrypt(module.encrypt("[" * 64 + "]" * 64)) is not None


# A ciphertext block C found by search (see the test below): under the current key it decrypts
# with valid padding to 15 bytes of ASCII that are not JSON; the IV is chosen so that the previous
# key reads it as the JSON text "1". Such a chance match happens to about one in 256 old messages'
# padding; the previous key must still be tried.
CURRENT_KEY = "key-2026-q4"
PREVIOUS_KEY = "key-2026-q3"
CHANCE_BLOCK = bytes.fromhex("5486474a5294c17b110d841ab1b46e71")


def chance_match_payload() -> str:
    plain_for_previous = b"1" + b" " * 14 + b"\x01"  # JSON "1", trailing spaces, one byte of padding
    block = AES.new(hashlib.sha256(PREVIOUS_KEY.encode()).digest(), AES.MODE_ECB).decrypt(CHANCE_BLOCK)
    iv = bytes(a ^ b for a, b in zip(block, plain_for_previous, strict=True))
    return pned(b"ACRH", iv, CHANCE_BLOCK)


def test_a_chance_padding_match_under_the_current_key_still_tries_the_previous_key() -> None:
    payload = chance_match_payload()
    data = b64decode(payload)
    # The premise: the current key opens it cleanly, to text that is not JSON.
    text = PubNubAesCbcCryptor(CURRENT_KEY).decrypt(CryptorPayload(data=data[26:], cryptor_data=data[10:26]))
    with pytest.raises(ValueError):
        json.loads(text)
    assert refusal(RotatingCryptoModule(CURRENT_KEY), payload) == "no cipher key opens this payload"
    assert RotatingCryptoModule(CURRENT_KEY, previous_keys=[PREVIOUS_KEY]).decrypt(payload) == 1


@pytest.mark.parametrize("size", range(1, 50))
def test_encrypted_size_matches_real_ciphertext_at_every_padding_step(size: int) -> None:
    ciphertext = RotatingCryptoModule("k").encrypt("x" * size)
    assert encrypted_size(size) == len(json.dumps(ciphertext))
