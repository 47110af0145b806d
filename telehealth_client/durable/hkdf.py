"""HKDF-SHA256 (RFC 5869) on the standard library's HMAC: the key derivation of sealing at rest
(durable/at_rest.py) and of the audit trail's MAC keys (audit/keys.py).

The standard library's, not a crypto library's: deriving the keys is all an idle agent does with
them at start, and the library's native module would cost the agent its resident memory for
nothing (tests/unit/test_media_imports.py). tests/unit/test_hkdf.py checks it against RFC 5869's
vectors and the ``cryptography`` package's HKDF.

Public API: ``hkdf_sha256(secret, *, salt, info, length=32) -> bytes``.
"""

from __future__ import annotations

import hmac
from typing import Final

_HASH: Final = "sha256"
_HASH_BYTES: Final = 32
MAX_LENGTH: Final = 255 * _HASH_BYTES  # RFC 5869: at most 255 blocks


def hkdf_sha256(secret: bytes, *, salt: bytes, info: bytes, length: int = 32) -> bytes:
    """``length`` bytes of key from ``secret`` (extract under ``salt``, expand with ``info``)."""
    if not 0 < length <= MAX_LENGTH:
        raise ValueError(f"length: must be 1 to {MAX_LENGTH} bytes, got {length}")
    # An empty salt is HMAC's zero key, which RFC 5869 asks for when no salt is given.
    pseudorandom = hmac.digest(salt, secret, _HASH)
    blocks: list[bytes] = []
    block = b""
    for counter in range(1, -(-length // _HASH_BYTES) + 1):
        block = hmac.digest(pseudorandom, block + info + bytes([counter]), _HASH)
        blocks.append(block)
    return b"".join(blocks)[:length]
