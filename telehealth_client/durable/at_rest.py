"""Encryption at rest for the state directory: AES-256-GCM under a key derived from a configured secret.

A sealed blob is ``version (1 byte) | nonce (12 bytes) | ciphertext and tag``. The key is
HKDF-SHA256 of the secret with a fixed salt and the caller's ``purpose`` as info, so one secret
gives each store its own key. Secrets that were rotated out (``previous``) still open what they
sealed; new blobs are always sealed with the current one. Associated data binds a blob to where
it belongs (a row's ID): the same blob under another ID does not open.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Final

from telehealth_client.durable.hkdf import hkdf_sha256

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

VERSION: Final = 1
_SALT: Final = b"telehealth-client at rest v1"
_NONCE_BYTES: Final = 12
_TAG_BYTES: Final = 16


class SealError(Exception):
    """A blob that no key opens, or that is not a sealed blob at all. Names no secret and no content."""


def _derive(secret: str, purpose: str) -> bytes:
    return hkdf_sha256(secret.encode("utf-8"), salt=_SALT, info=purpose.encode("utf-8"))


@functools.cache
def _aes_gcm() -> tuple[type[AESGCM], type[Exception]]:
    """AES-GCM and its refusal. Loaded here, on the first seal or open, not at import: the
    library's native module costs ~8 MB of resident memory, and an idle kiosk seals nothing."""
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    return AESGCM, InvalidTag


def _check_secret(value: object, field: str) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{field}: must be a string, got {type(value).__name__}")
    if not value:
        raise ValueError(f"{field}: must not be empty")
    return value


class Sealer:
    """Seals and opens blobs for one ``purpose`` (one store). Keeps derived keys only, never the secret."""

    def __init__(self, secret: str, previous: Sequence[str] = (), *, purpose: str) -> None:
        if isinstance(previous, str):
            raise ValueError("previous: must be a sequence of secrets, not one string")
        _check_secret(secret, "secret")
        for index, old in enumerate(previous):
            _check_secret(old, f"previous[{index}]")
        if not isinstance(purpose, str) or not purpose:
            raise ValueError("purpose: must be a non-empty string")
        self._keys = (_derive(secret, purpose), *(_derive(old, purpose) for old in previous))
        self._ciphers: tuple[AESGCM, ...] | None = None  # the current key's first: made on first use

    def __repr__(self) -> str:
        return f"Sealer(previous_keys={len(self._keys) - 1})"

    def _each_cipher(self) -> tuple[AESGCM, ...]:
        if self._ciphers is None:
            aes_gcm, _ = _aes_gcm()
            self._ciphers = tuple(aes_gcm(key) for key in self._keys)
        return self._ciphers

    def seal(self, plaintext: bytes, *, associated: bytes = b"") -> bytes:
        if not isinstance(plaintext, bytes | bytearray):
            raise TypeError(f"plaintext: must be bytes, got {type(plaintext).__name__}")
        nonce = os.urandom(_NONCE_BYTES)
        return bytes([VERSION]) + nonce + self._each_cipher()[0].encrypt(nonce, bytes(plaintext), associated)

    def open(self, sealed: bytes, *, associated: bytes = b"") -> bytes:
        """The plaintext; SealError when the blob is malformed or no key (current or previous) opens it."""
        if not isinstance(sealed, bytes | bytearray):
            raise SealError(f"sealed blob must be bytes, got {type(sealed).__name__}")
        if len(sealed) < 1 + _NONCE_BYTES + _TAG_BYTES:
            raise SealError(f"sealed blob is too short ({len(sealed)} bytes)")
        if sealed[0] != VERSION:
            raise SealError(f"sealed blob has unknown version {sealed[0]}")
        nonce, body = bytes(sealed[1 : 1 + _NONCE_BYTES]), bytes(sealed[1 + _NONCE_BYTES :])
        _, invalid_tag = _aes_gcm()
        for cipher in self._each_cipher():
            try:
                return cipher.decrypt(nonce, body, associated)
            except invalid_tag:
                continue
        raise SealError(
            "no key opens the sealed blob (wrong key, or the blob or what it is bound to changed)"
        )
