"""Encryption at rest: AES-256-GCM under an HKDF key from a configured secret, with key rotation."""

from __future__ import annotations

import pytest

from telehealth_client.durable.at_rest import VERSION, Sealer, SealError

SECRET = "configured-cipher-key-1"
OTHER = "configured-cipher-key-2"
MARKER = b"PHI-CANARY-7f3a chest pain since Tuesday"


def test_seal_then_open_gives_the_plaintext_back_and_hides_it() -> None:
    sealer = Sealer(SECRET, purpose="outbox")
    sealed = sealer.seal(MARKER, associated=b"id-1")
    assert MARKER not in sealed
    assert sealed[0] == VERSION
    assert sealer.open(sealed, associated=b"id-1") == MARKER


def test_each_seal_uses_a_fresh_nonce() -> None:
    sealer = Sealer(SECRET, purpose="outbox")
    assert sealer.seal(MARKER) != sealer.seal(MARKER)


def test_a_blob_sealed_with_another_secret_is_refused() -> None:
    sealed = Sealer(OTHER, purpose="outbox").seal(MARKER)
    with pytest.raises(SealError, match="no key opens"):
        Sealer(SECRET, purpose="outbox").open(sealed)


def test_the_same_secret_for_another_purpose_is_another_key() -> None:
    sealed = Sealer(SECRET, purpose="audit").seal(MARKER)
    with pytest.raises(SealError):
        Sealer(SECRET, purpose="outbox").open(sealed)


@pytest.mark.parametrize("position", [0, 1, 13, -1])
def test_a_tampered_blob_is_refused(position: int) -> None:
    sealer = Sealer(SECRET, purpose="outbox")
    sealed = bytearray(sealer.seal(MARKER))
    sealed[position] ^= 0x01
    with pytest.raises(SealError):
        sealer.open(bytes(sealed))


def test_a_short_blob_is_refused_with_its_length_not_its_content() -> None:
    with pytest.raises(SealError, match=r"too short \(5 bytes\)"):
        Sealer(SECRET, purpose="outbox").open(b"\x01abcd")


def test_a_previous_secret_still_opens_what_it_sealed_and_new_blobs_use_the_current_one() -> None:
    old = Sealer(OTHER, purpose="outbox").seal(MARKER)
    rotated = Sealer(SECRET, [OTHER], purpose="outbox")
    assert rotated.open(old) == MARKER
    with pytest.raises(SealError):
        Sealer(OTHER, purpose="outbox").open(rotated.seal(MARKER))


def test_associated_data_that_differs_is_refused() -> None:
    sealer = Sealer(SECRET, purpose="outbox")
    sealed = sealer.seal(MARKER, associated=b"id-1")
    with pytest.raises(SealError):
        sealer.open(sealed, associated=b"id-2")
    with pytest.raises(SealError):
        sealer.open(sealed)


def test_errors_and_repr_name_no_secret_and_no_content() -> None:
    sealer = Sealer(SECRET, [OTHER], purpose="outbox")
    with pytest.raises(SealError) as caught:
        Sealer(OTHER, purpose="outbox").open(sealer.seal(MARKER))
    for text in (str(caught.value), repr(sealer)):
        assert SECRET not in text and OTHER not in text and "PHI-CANARY" not in text


@pytest.mark.parametrize(
    ("secret", "previous", "purpose", "message"),
    [
        ("", (), "outbox", "secret: must not be empty"),
        (b"bytes", (), "outbox", "secret: must be a string, got bytes"),
        (SECRET, ("",), "outbox", r"previous\[0\]: must not be empty"),
        (SECRET, OTHER, "outbox", "previous: must be a sequence of secrets, not one string"),
        (SECRET, (), "", "purpose: must be a non-empty string"),
    ],
)
def test_bad_configuration_names_the_field(
    secret: object, previous: object, purpose: str, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        Sealer(secret, previous, purpose=purpose)  # type: ignore[arg-type]
