"""The audit trail's MAC keys.

``ChainKeys`` (audit store version 3) are the device's own: derived by HKDF from the agent's
device credential, one key per purpose (chain links, the chain's head, delivery outcomes, the
sink's acknowledgements), so a MAC made for one purpose never passes for another. The head's MAC
also covers how the store began (``audit_origin``) and, once records were pruned, where the
stored chain starts (``audit_pruning``'s anchor). The current credential signs; credentials
rotated out (``previous``) still verify what they signed, so a rotated credential keeps
verifying the old chain.

``LegacyChainKeys`` verify and settle a version 2 store, whose chain was keyed by the
organization-wide cipher key (every kiosk and cart holds it): such a store is only delivered
and verified after an upgrade, never appended to.

Only derived keys are kept; ``repr`` shows how many, never a key.
"""

from __future__ import annotations

import hmac
from collections.abc import Sequence
from typing import Final

from telehealth_client.audit.origin import NO_ORIGIN, StoreOrigin, origin_text
from telehealth_client.audit.pruning import Anchor, anchor_text
from telehealth_client.durable.hkdf import hkdf_sha256

_SALT: Final = b"telehealth-client audit v3"
_LINK: Final = b"audit chain link v3"
_HEAD: Final = b"audit chain head v3"
_SETTLEMENT: Final = b"audit delivery settlement v3"
_ACKNOWLEDGEMENT: Final = b"audit sink acknowledgement v3"

_LEGACY_SALT: Final = b"telehealth-client audit chain"
_LEGACY_PURPOSE: Final = b"audit chain hmac v2"


def _derive(secret: str, salt: bytes, purpose: bytes) -> bytes:
    return hkdf_sha256(secret.encode("utf-8"), salt=salt, info=purpose)


def _check_secrets(secret: object, previous: Sequence[str]) -> list[str]:
    if isinstance(previous, str):
        raise ValueError("previous: must be a sequence of secrets, not one string")
    secrets = [secret, *previous]
    for index, value in enumerate(secrets):
        field = "secret" if index == 0 else f"previous[{index - 1}]"
        if not isinstance(value, str):
            raise ValueError(f"{field}: must be a string, got {type(value).__name__}")
        if not value:
            raise ValueError(f"{field}: must not be empty")
    return [str(value) for value in secrets]


def _mac(key: bytes, text: str) -> str:
    # The one-shot form: several times faster than hmac.new, and the agent checks every link at start.
    return hmac.digest(key, text.encode(), "sha256").hex()


def link_text(prev_hash: str, position: int, event: str) -> str:
    return f"{prev_hash}\n{position}\n{event}"


def settlement_text(record_hash: str, target: str, refused_status: int | None) -> str:
    return f"settled\n{record_hash}\n{target}\n{'' if refused_status is None else refused_status}"


def head_text(
    device_id: str,
    base: int,
    records: int,
    last_hash: str,
    origin: StoreOrigin,
    anchor: Anchor | None = None,
    unanchored: bool = False,
) -> str:
    # An unpruned store's text is as it was before pruning existed: its MAC still verifies; so is
    # an anchored one's (placed after the sink's head) as it was before begun-offline stores existed.
    text = f"head\n{device_id}\n{base}\n{records}\n{last_hash}\n{origin_text(origin)}{anchor_text(anchor)}"
    return text + ("\nunanchored" if unanchored else "")


def acknowledgement_text(device_id: str, highest_sequence: int) -> str:
    return f"acknowledged\n{device_id}\n{highest_sequence}"


class _Purpose:
    """One purpose's keys: the current one MACs, every one (current first) verifies."""

    def __init__(self, secrets: Sequence[str], salt: bytes, purpose: bytes) -> None:
        self._keys = tuple(_derive(secret, salt, purpose) for secret in secrets)

    def mac(self, text: str) -> str:
        return _mac(self._keys[0], text)

    def verifies(self, text: str, stored: str) -> bool:
        return any(hmac.compare_digest(_mac(key, text), stored) for key in self._keys)


class _RecordKeys:
    """What every store version MACs: the chain's links and the delivery outcomes (settlements)."""

    def __init__(self, secrets: Sequence[str], link: _Purpose, settlement: _Purpose) -> None:
        self._previous = len(secrets) - 1
        self._link = link
        self._settlement = settlement

    def __repr__(self) -> str:
        return f"{type(self).__name__}(previous_keys={self._previous})"

    def link(self, prev_hash: str, position: int, event: str) -> str:
        """A record's hash under the current key."""
        return self._link.mac(link_text(prev_hash, position, event))

    def verifies_link(self, prev_hash: str, position: int, event: str, stored: str) -> bool:
        return self._link.verifies(link_text(prev_hash, position, event), stored)

    def settlement(self, record_hash: str, target: str, refused_status: int | None) -> str:
        """The MAC binding a delivery outcome to its record."""
        return self._settlement.mac(settlement_text(record_hash, target, refused_status))

    def verifies_settlement(
        self, record_hash: str, target: str, refused_status: int | None, stored: str
    ) -> bool:
        return self._settlement.verifies(settlement_text(record_hash, target, refused_status), stored)


class ChainKeys(_RecordKeys):
    """The keys of a version 3 store, from the device credential (and those it replaced)."""

    def __init__(self, secret: str, previous: Sequence[str] = ()) -> None:
        secrets = _check_secrets(secret, previous)
        super().__init__(secrets, _Purpose(secrets, _SALT, _LINK), _Purpose(secrets, _SALT, _SETTLEMENT))
        self._head = _Purpose(secrets, _SALT, _HEAD)
        self._acknowledgement = _Purpose(secrets, _SALT, _ACKNOWLEDGEMENT)

    def head(
        self,
        device_id: str,
        base: int,
        records: int,
        last_hash: str,
        origin: StoreOrigin = NO_ORIGIN,
        anchor: Anchor | None = None,
        unanchored: bool = False,
    ) -> str:
        """The MAC over everything the head states: whose chain, where it starts, its length and
        end, how the store began, (``anchor``) up to where it was pruned and (``unanchored``)
        whether it was begun without knowing the sink's head and not yet placed after it."""
        return self._head.mac(head_text(device_id, base, records, last_hash, origin, anchor, unanchored))

    def verifies_head(
        self,
        device_id: str,
        base: int,
        records: int,
        last_hash: str,
        stored: str,
        origin: StoreOrigin = NO_ORIGIN,
        anchor: Anchor | None = None,
        unanchored: bool = False,
    ) -> bool:
        text = head_text(device_id, base, records, last_hash, origin, anchor, unanchored)
        return self._head.verifies(text, stored)

    def acknowledgement(self, device_id: str, highest_sequence: int) -> str:
        """The MAC over the highest sequence the sink acknowledged for this device."""
        return self._acknowledgement.mac(acknowledgement_text(device_id, highest_sequence))

    def verifies_acknowledgement(self, device_id: str, highest_sequence: int, stored: str) -> bool:
        return self._acknowledgement.verifies(acknowledgement_text(device_id, highest_sequence), stored)


class LegacyChainKeys(_RecordKeys):
    """The keys of a version 2 store, from the organization's cipher key (and those it replaced):
    one key for links and settlements alike."""

    def __init__(self, secret: str, previous: Sequence[str] = ()) -> None:
        secrets = _check_secrets(secret, previous)
        chain = _Purpose(secrets, _LEGACY_SALT, _LEGACY_PURPOSE)
        super().__init__(secrets, chain, chain)
