"""Whose audit trail this is and which keys sign it, from the settings (the agent and the CLI agree).

The device ID is the agent's ``user_id`` (a kiosk's own device ID; a provider's or nurse's cart,
that user). The chain is keyed with the device credential (``device_credential``, and
``previous_device_credentials`` to verify what rotated-out ones signed), which no other device
holds. An agent without a device credential (a development run without the clinic) has no sink
and no other key of its own: its chain is keyed with the cipher key, which every device of the
organization holds, and ``device_keyed`` says so. A version 2 store is verified with the cipher keys.
"""

from __future__ import annotations

from dataclasses import dataclass

from telehealth_client.audit.keys import ChainKeys, LegacyChainKeys
from telehealth_client.config import Settings


@dataclass(frozen=True)
class TrailIdentity:
    device_id: str
    keys: ChainKeys
    legacy_keys: LegacyChainKeys | None  # None: no cipher key in the settings
    device_keyed: bool


def trail_identity(settings: Settings) -> TrailIdentity:
    """MissingSecretError (listing where it looked) if there is neither a device credential nor a
    cipher key."""
    cipher = settings.cipher_key
    legacy = (
        None
        if cipher is None
        else LegacyChainKeys(
            cipher.get_secret_value(), [key.get_secret_value() for key in settings.previous_cipher_keys]
        )
    )
    credential = settings.device_credential
    if credential is not None:
        keys = ChainKeys(
            credential.get_secret_value(),
            [old.get_secret_value() for old in settings.previous_device_credentials],
        )
        return TrailIdentity(settings.user_id, keys, legacy, device_keyed=True)
    cipher = settings.require_secret("device_credential") if cipher is None else cipher
    keys = ChainKeys(
        cipher.get_secret_value(), [key.get_secret_value() for key in settings.previous_cipher_keys]
    )
    return TrailIdentity(settings.user_id, keys, legacy, device_keyed=False)
