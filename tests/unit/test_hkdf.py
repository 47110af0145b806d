"""HKDF-SHA256 on the standard library (durable/hkdf.py): RFC 5869's vectors, and the very keys the
``cryptography`` package's HKDF gives (every sealed blob and audit MAC already on disk was keyed so)."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from telehealth_client.durable.hkdf import MAX_LENGTH, hkdf_sha256


@pytest.mark.parametrize(
    ("secret", "salt", "info", "length", "expected"),
    [
        (  # RFC 5869, A.1
            bytes.fromhex("0b" * 22),
            bytes.fromhex("000102030405060708090a0b0c"),
            bytes.fromhex("f0f1f2f3f4f5f6f7f8f9"),
            42,
            "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865",
        ),
        (  # RFC 5869, A.3: no salt, no info
            bytes.fromhex("0b" * 22),
            b"",
            b"",
            42,
            "8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d9d201395faa4b61a96c8",
        ),
    ],
)
def test_rfc_5869_vectors(secret: bytes, salt: bytes, info: bytes, length: int, expected: str) -> None:
    assert hkdf_sha256(secret, salt=salt, info=info, length=length).hex() == expected


@pytest.mark.parametrize("length", [1, 31, 32, 33, 64, 100, MAX_LENGTH])
def test_the_same_keys_as_the_cryptography_package(length: int) -> None:
    secret, salt, info = b"configured-cipher-key-1", b"telehealth-client at rest v1", b"outbox"
    theirs = HKDF(algorithm=hashes.SHA256(), length=length, salt=salt, info=info).derive(secret)
    assert hkdf_sha256(secret, salt=salt, info=info, length=length) == theirs


@pytest.mark.parametrize("length", [0, -1, MAX_LENGTH + 1])
def test_a_length_out_of_range_is_refused_naming_it(length: int) -> None:
    with pytest.raises(ValueError, match=rf"length: must be 1 to {MAX_LENGTH} bytes, got {length}"):
        hkdf_sha256(b"secret", salt=b"salt", info=b"info", length=length)
