"""The pure role rules behind the token endpoint: required context and pattern semantics.

What each token holds is shown against the relay in ``test_role_grants.py``.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from telehealth_devstack.grants import (
    READ_WRITE,
    GrantRequestError,
    build_grant,
    prefix_pattern,
    presence_pattern,
)

ORG = {"organization_id": "org-1"}


@pytest.mark.parametrize(
    ("request_fields", "field"),
    [
        ({"user_id": "pat-1", "role": "patient"}, "providerId"),
        ({"user_id": "dr-lee", "role": "provider"}, "departmentId"),
        (
            {"user_id": "dr-lee", "role": "provider", "consultation_channel": "consultation.dr-lee.pat-1"},
            "departmentId",
        ),
        ({"user_id": "nurse-1", "role": "nurse"}, "departmentId"),
        ({"user_id": "pat-1", "role": "admin", "provider_id": "dr-lee"}, "role"),
        ({"user_id": "pat.1", "role": "patient", "provider_id": "dr-lee"}, "userId"),
        ({"user_id": "pat-1", "role": "patient", "provider_id": "dr-*"}, "providerId"),
        ({"user_id": "dr-lee", "role": "provider", "department_id": "er.x"}, "departmentId"),
        (
            {"user_id": "dr-lee", "role": "provider", "department_id": "er", "organization_id": "o*"},
            "organizationId",
        ),
    ],
)
def test_missing_or_bad_context_names_the_field(request_fields: dict[str, Any], field: str) -> None:
    with pytest.raises(GrantRequestError) as error:
        build_grant(**{**ORG, **request_fields})
    assert error.value.field == field


def test_a_staff_token_without_a_consultation_is_the_standing_one() -> None:
    for role in ("provider", "nurse"):
        grant = build_grant(user_id="u-1", role=role, department_id="er", **ORG)
        assert grant.consultation_channel is None
        assert not any(name.startswith("consultation.") for name in grant.channels)


def test_a_provider_naming_another_providers_consultation_gets_that_one_only() -> None:
    grant = build_grant(
        user_id="dr-lee",
        role="provider",
        consultation_channel="consultation.dr-okafor.pat-1",
        department_id="er",
        **ORG,
    )
    assert grant.consultation_channel == "consultation.dr-okafor.pat-1"
    assert grant.channels["consultation.dr-okafor.pat-1"] == READ_WRITE
    assert "waiting-room.dr-okafor" not in grant.channels
    assert not any("dr-okafor" in pattern for pattern in grant.patterns)


def test_patient_cannot_get_a_token_for_another_patients_consultation() -> None:
    with pytest.raises(GrantRequestError) as error:
        build_grant(user_id="pat-1", role="patient", consultation_channel="consultation.dr-lee.pat-2", **ORG)
    assert error.value.field == "consultationChannel"


@pytest.mark.parametrize("channel", ["consultation.dr-lee", "consultation.dr-lee.pat-1.video", "chat.a.b"])
@pytest.mark.parametrize("role", ["nurse", "provider"])
def test_malformed_consultation_channel_is_refused(channel: str, role: str) -> None:
    with pytest.raises(GrantRequestError) as error:
        build_grant(user_id="u-1", role=role, consultation_channel=channel, department_id="er", **ORG)
    assert error.value.field == "consultationChannel"


def test_prefix_pattern_covers_own_channels_only() -> None:
    # PubNub patterns are regular expressions searched in the channel name.
    pattern = re.compile(prefix_pattern("consultation.dr-lee"))
    assert pattern.search("consultation.dr-lee.pat-1")
    assert pattern.search("consultation.dr-lee.pat-1.video-pnpres")
    # The seeds' unanchored `consultation.dr-lee.*` would match all of these.
    assert not pattern.search("consultation.dr-leex.pat-1")
    assert not pattern.search("consultationXdr-leeXpat-1")
    assert not pattern.search("old.consultation.dr-lee.pat-1")
    assert not pattern.search("consultation.dr-lee")


def test_presence_pattern_covers_own_presence_channels_only() -> None:
    pattern = re.compile(presence_pattern("consultation.dr-lee"))
    assert pattern.search("consultation.dr-lee.pat-1-pnpres")
    assert pattern.search("consultation.dr-lee.pat-1.video-pnpres")
    assert not pattern.search("consultation.dr-lee.pat-1")
    assert not pattern.search("consultation.dr-leex.pat-1-pnpres")
    assert not pattern.search("consultation.dr-lee.pat-1-pnpres.x")
