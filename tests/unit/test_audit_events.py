"""Audit events carry IDs and codes only: anything that could be free text (PHI) is refused."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from telehealth_client.audit.trail import AuditTrail, ChainKeys, LegacyChainKeys, audit_event, retry_delay
from telehealth_client.protocol import messages

MARKER = "Jane Doe 1970-01-01"


def build(**overrides: Any) -> messages.AuditEvent:
    fields: dict[str, Any] = {
        "organization_id": "org-test",
        "actor_id": "dr-lee",
        "actor_role": "provider",
        "resource_type": "consultation",
        "resource_id": "consultation.dr-lee.pat-1",
        "action": "join",
    }
    fields.update(overrides)
    return audit_event("CONSULTATION_SESSION_START", **fields)


def test_a_new_event_has_a_fresh_uuid4_and_the_time_now() -> None:
    before = datetime.now(UTC)
    first, second = build(), build()
    assert first.id != second.id and uuid.UUID(first.id).version == 4
    assert before - timedelta(seconds=1) <= first.timestamp <= datetime.now(UTC)
    wire = messages.encode(build(metadata={"sessionId": "s-1", "attempt": 2, "granted": True}))
    assert wire["organizationId"] == "org-test"
    assert wire["actor"] == {"userId": "dr-lee", "role": "provider", "ipAddress": None}
    assert wire["metadata"] == {"sessionId": "s-1", "attempt": 2, "granted": True}
    assert (wire["outcome"], wire["severity"]) == ("success", "info")


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"metadata": {"reason": MARKER}}, "metadata.reason"),
        ({"metadata": {"note": "a b"}}, "metadata.note"),
        ({"metadata": {"sessionId": ""}}, "metadata.sessionId"),
        ({"metadata": {"sessionId": "x" * 201}}, "metadata.sessionId"),
        ({"metadata": {"score": 0.5}}, "metadata.score"),
        ({"metadata": {"items": ["a"]}}, "metadata.items"),
        ({"metadata": {"Reason": "x"}}, "metadata"),
        ({"metadata": {"free text": "x"}}, "metadata"),
        ({"resource_id": MARKER}, "resource.id"),
        ({"channel": "consultation.dr-lee.pat 1"}, "resource.channel"),
        ({"actor_id": "dr lee"}, "actor.user_id"),
        ({"action": "said hello"}, "action"),
        ({"organization_id": "org.x"}, "organization_id"),
        ({"resource_type": "consultation room"}, "resource.type"),
    ],
)
def test_anything_but_ids_and_codes_is_refused_naming_the_field(
    overrides: dict[str, Any], field: str
) -> None:
    with pytest.raises(ValueError, match=rf"^{re.escape(field)}: ") as refused:
        build(**overrides)
    assert MARKER not in str(refused.value)
    assert "a b" not in str(refused.value) and "dr lee" not in str(refused.value)


def test_too_many_metadata_entries_are_refused() -> None:
    with pytest.raises(ValueError, match=r"^metadata: at most 32 entries, got 33$"):
        build(metadata={f"key{number}": number for number in range(33)})


def test_ids_with_dots_and_colons_are_accepted() -> None:
    event = build(
        metadata={"consentRef": "consent:pat-1:2026-11-22", "sessionId": "consultation.dr-lee.pat-1"}
    )
    assert event.metadata["consentRef"] == "consent:pat-1:2026-11-22"


def test_the_trail_refuses_bad_settings_naming_them(tmp_path: Any) -> None:
    keys = ChainKeys("audit-unit-device-credential-0123")
    with pytest.raises(ValueError, match="organizationId"):
        AuditTrail(tmp_path, keys=keys, device_id="kiosk-1", organization_id="org x", sink=None)
    with pytest.raises(ValueError, match="deviceId"):
        AuditTrail(tmp_path, keys=keys, device_id="kiosk 1", organization_id="org", sink=None)
    with pytest.raises(ValueError, match="backoff_min_seconds"):
        AuditTrail(
            tmp_path, keys=keys, device_id="kiosk-1", organization_id="org", sink=None, backoff_min_seconds=0
        )
    with pytest.raises(ValueError, match="backoff_min_seconds"):
        AuditTrail(
            tmp_path,
            keys=keys,
            device_id="kiosk-1",
            organization_id="org",
            sink=None,
            backoff_min_seconds=5,
            backoff_max_seconds=1,
        )
    assert not any(tmp_path.iterdir())


def test_chain_keys_refuse_bad_secrets_naming_them_and_never_show_one() -> None:
    with pytest.raises(ValueError, match=r"^secret: must not be empty$"):
        ChainKeys("")
    with pytest.raises(ValueError, match=r"^secret: must be a string, got bytes$"):
        ChainKeys(b"key-bytes-0123456789")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"^previous\[1\]: must not be empty$"):
        ChainKeys("audit-unit-cipher-key-0123456789", ["old-key-0123456789", ""])
    with pytest.raises(ValueError, match=r"^previous: must be a sequence of secrets, not one string$"):
        ChainKeys("audit-unit-cipher-key-0123456789", "old-key-0123456789")
    keys = ChainKeys("audit-unit-cipher-key-0123456789", ["old-key-0123456789"])
    assert repr(keys) == "ChainKeys(previous_keys=1)"
    assert "0123456789" not in repr(vars(keys))  # derived keys only, not the secret
    with pytest.raises(ValueError, match=r"^previous\[0\]: must not be empty$"):
        LegacyChainKeys("a-cipher-key-0123456789", [""])
    assert repr(LegacyChainKeys("a-cipher-key-0123456789")) == "LegacyChainKeys(previous_keys=0)"


def test_each_purpose_has_its_own_key_so_no_mac_passes_for_another() -> None:
    """A link, a head, a settlement and an acknowledgement of the same text never share a MAC:
    a forger cannot lift one into another's place."""
    keys = ChainKeys("audit-unit-device-credential-0123")
    text_parts = ("kiosk-1", 3, 4, "f" * 64)
    macs = {
        keys.link("kiosk-1", 3, "4"),
        keys.head(*text_parts),
        keys.settlement("kiosk-1", "3", 4),
        keys.acknowledgement("kiosk-1", 3),
    }
    assert len(macs) == 4
    # The same derivation as another device's credential, or as the version 2 chain, gives another MAC.
    assert keys.link("p", 1, "e") != ChainKeys("audit-unit-device-credential-0124").link("p", 1, "e")
    assert keys.link("p", 1, "e") != LegacyChainKeys("audit-unit-device-credential-0123").link("p", 1, "e")


def test_retry_delay_is_full_jitter_doubling_up_to_the_cap() -> None:
    highest = lambda low, high: high  # noqa: E731
    lowest = lambda low, high: low  # noqa: E731
    assert [retry_delay(n, 0.5, 3.0, highest) for n in (1, 2, 3, 4, 5, 40)] == [0.5, 1.0, 2.0, 3.0, 3.0, 3.0]
    assert retry_delay(3, 0.5, 3.0, lowest) == 0.0
