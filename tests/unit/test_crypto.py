import json
from base64 import b64decode, b64encode

import pytest
from pubnub.crypto import AesCbcCryptoModule
from pubnub.pnconfiguration import PNConfiguration

from telehealth_client.pubsub.crypto import DecryptionError, RotatingCryptoModule, encrypted_size

MESSAGE = {"type": "chat", "text": "MARKER-PHI-7731 chest pain since Tuesday"}


def sdk_module(key: str) -> AesCbcCryptoModule:
    config = PNConfiguration()
    config.cipher_key = key
    return AesCbcCryptoModule(config)


def test_encrypts_with_a_pned_header_and_random_iv() -> None:
    module = RotatingCryptoModule("current-key")
    first = module.encrypt(json.dumps(MESSAGE))
    second = module.encrypt(json.dumps(MESSAGE))
    assert b64decode(first)[:4] == b"PNED"
    assert b64decode(first)[5:9] == b"ACRH"
    assert first != second  # a fresh IV each time
    assert "MARKER-PHI" not in first


def test_reads_the_sdk_module_and_the_sdk_reads_ours() -> None:
    ours = RotatingCryptoModule("shared-key")
    theirs = sdk_module("shared-key")
    assert ours.decrypt(theirs.encrypt(json.dumps(MESSAGE))) == MESSAGE
    assert theirs.decrypt(ours.encrypt(json.dumps(MESSAGE))) == MESSAGE


def test_a_previous_key_still_decrypts_after_rotation() -> None:
    old = RotatingCryptoModule("key-2026-q3")
    rotated = RotatingCryptoModule("key-2026-q4", previous_keys=["key-2026-q3"])
    assert rotated.decrypt(old.encrypt(json.dumps(MESSAGE))) == MESSAGE
    assert rotated.key_count == 2


def test_without_the_previous_key_an_old_message_is_refused() -> None:
    old = RotatingCryptoModule("key-2026-q3")
    rotated = RotatingCryptoModule("key-2026-q4")
    with pytest.raises(DecryptionError, match="no cipher key"):
        rotated.decrypt(old.encrypt(json.dumps(MESSAGE)))


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (MESSAGE, "not an encrypted string"),
        ("not base64 at all!", "not base64"),
        (b64encode(b"hello world, plain").decode(), "not AES-CBC"),
        (b64encode(b"PNED\x01ACRH\x10" + b"0" * 16 + b"abc").decode(), "wrong length"),
    ],
)
def test_clear_text_and_garbage_are_refused(payload: object, reason: str) -> None:
    with pytest.raises(DecryptionError, match=reason):
        RotatingCryptoModule("k").decrypt(payload)


def test_empty_key_is_refused() -> None:
    with pytest.raises(ValueError, match="cipher_key"):
        RotatingCryptoModule("")


@pytest.mark.parametrize("size", [1, 15, 16, 17, 100, 1000, 24_000])
def test_encrypted_size_matches_real_ciphertext(size: int) -> None:
    ciphertext = RotatingCryptoModule("k").encrypt("x" * size)
    assert encrypted_size(size) == len(json.dumps(ciphertext))


def forged_header(cryptor_id: bytes, iv: bytes, body: bytes = b"0" * 16) -> str:
    return b64encode(b"PNED\x01" + cryptor_id + bytes([len(iv)]) + iv + body).decode()


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (forged_header(b"\xff\xfe\xfd\xfc", b"0" * 16), "malformed header"),
        (forged_header(b"ACRH", b"01234"), "IV that is not 16 bytes"),
        (b64encode(b"PNED\x01AC").decode(), "malformed header"),
    ],
)
def test_forged_pned_headers_are_refused(payload: str, reason: str) -> None:
    with pytest.raises(DecryptionError, match=reason):
        RotatingCryptoModule("k").decrypt(payload)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("[" * 6000 + "]" * 6000, "deeper than 64 levels"),
        ('{"n": NaN}', "not a number"),
        ('{"n": 1e999}', "out of range"),
    ],
)
def test_decrypted_json_beyond_the_bounds_is_refused(text: str, reason: str) -> None:
    module = RotatingCryptoModule("k")
    with pytest.raises(DecryptionError, match=reason):
        module.decrypt(module.encrypt(text))
