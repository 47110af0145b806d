"""AES-256-CBC message encryption (PubNub CryptoModule, ``PNED`` header) with key rotation.

Messages are always encrypted with the current cipher key. Decryption tries the
current key first and then every previous key, so a key can be rotated without losing
messages already in flight or in history. A payload that no key opens is refused:
clear text is never accepted in place of ciphertext.
"""

from __future__ import annotations

import binascii
from base64 import b64decode
from collections.abc import Sequence
from typing import Any

from pubnub.crypto import PubNubCryptoModule
from pubnub.crypto_core import CryptorPayload, PubNubAesCbcCryptor
from pubnub.exceptions import PubNubException

from telehealth_client.pubsub import bounded_json

# PNED header: sentinel (4), version (1), cryptor id (4), data length (1), IV (16).
_IV_BYTES = 16
_HEADER_BYTES = 4 + 1 + 4 + 1 + _IV_BYTES


def encrypted_size(plain_bytes: int) -> int:
    """Size on the wire of ``plain_bytes`` of JSON once encrypted: a quoted base64 string."""
    padded = (plain_bytes // 16 + 1) * 16  # PKCS#7 always adds at least one byte
    return 4 * -(-(_HEADER_BYTES + padded) // 3) + 2


class DecryptionError(ValueError):
    """A payload that is not ciphertext for any of our keys."""


class RotatingCryptoModule(PubNubCryptoModule):  # type: ignore[misc]
    """The SDK's AES-CBC CryptoModule, decrypting with the current or any previous key."""

    def __init__(self, cipher_key: str, previous_keys: Sequence[str] = ()) -> None:
        if not cipher_key:
            raise ValueError("cipher_key: must not be empty")
        current = PubNubAesCbcCryptor(cipher_key)
        super().__init__({PubNubAesCbcCryptor.CRYPTOR_ID: current}, current)
        self._decryptors = [current, *(PubNubAesCbcCryptor(key) for key in previous_keys if key)]

    @property
    def key_count(self) -> int:
        return len(self._decryptors)

    def decrypt(self, message: Any) -> Any:
        """Decrypt a base64 ``PNED`` payload into its JSON value; raise DecryptionError otherwise."""
        if not isinstance(message, str):
            raise DecryptionError("payload is not an encrypted string")
        try:
            data = b64decode(message, validate=True)
        except (binascii.Error, ValueError):
            raise DecryptionError("payload is not base64") from None
        try:
            header = self.decode_header(data)
        except (PubNubException, ValueError):  # ValueError: a cryptor id that is not UTF-8
            raise DecryptionError("payload has a malformed header") from None
        if not header or header["cryptor_id"] != PubNubAesCbcCryptor.CRYPTOR_ID:
            raise DecryptionError("payload is not AES-CBC CryptoModule ciphertext")
        if len(header["cryptor_data"]) != _IV_BYTES:
            # The SDK's cryptor would raise ValueError from AES for a short IV.
            raise DecryptionError("payload has an IV that is not 16 bytes")
        body = data[header["length"] :]
        if not body or len(body) % 16:
            raise DecryptionError("ciphertext has a wrong length")
        payload = CryptorPayload(data=body, cryptor_data=header["cryptor_data"])
        for cryptor in self._decryptors:
            try:
                text = cryptor.decrypt(payload)
            except (PubNubException, ValueError):
                continue  # wrong key: the padding did not check out
            try:
                return bounded_json.loads(text)
            except bounded_json.JsonLimitError as exc:
                # It decrypted cleanly, so the key is right: say which bound refused it.
                raise DecryptionError(f"decrypted JSON refused: {exc}") from None
            except (ValueError, RecursionError):
                continue  # padding matched by chance under a wrong key
        raise DecryptionError("no cipher key opens this payload")
