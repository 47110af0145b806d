"""The pure role rules behind the token endpoint: required context and pattern semantics."""

from __future__ import annotations

import re

import pytest

from telehealth_client.devstack.grants import GrantRequestError, build_grant, prefix_pattern


@pytest.mark.parametrize(
    ("request_fields", "field"),
    [
        ({"user_id": "pat-1", "role": "patient"}, "providerId"),
        ({"user_id": "dr-lee", "role": "provider", "department_id": "cardiology"}, "consultationChannel"),
        (
            {"user_id": "dr-lee", "role": "provider", "consultation_channel": "consultation.dr-lee.pat-1"},
            "departmentId",
        ),
        ({"user_id": "nurse-1", "role": "nurse", "department_id": "er"}, "consultationChannel"),
        ({"user_id": "pat-1", "role": "admin", "provider_id": "dr-lee"}, "role"),
        ({"user_id": "pat.1", "role": "patient", "provider_id": "dr-lee"}, "userId"),
        ({"user_id": "pat-1", "role": "patient", "provider_id": "dr-*"}, "providerId"),
    ],
)
def test_missing_or_bad_context_names_the_field(request_fields: dict[str, str], field: str) -> None:
    with pytest.raises(GrantRequestError) as error:
        build_grant(**request_fields)
    assert error.value.field == field


def test_provider_cannot_get_a_token_for_another_providers_consultation() -> None:
    with pytest.raises(GrantRequestError) as error:
        build_grant(
            user_id="dr-lee",
            role="provider",
            consultation_channel="consultation.dr-okafor.pat-1",
            department_id="cardiology",
        )
    assert error.value.field == "consultationChannel"


def test_patient_cannot_get_a_token_for_another_patients_consultation() -> None:
    with pytest.raises(GrantRequestError) as error:
        build_grant(user_id="pat-1", role="patient", consultation_channel="consultation.dr-lee.pat-2")
    assert error.value.field == "consultationChannel"


@pytest.mark.parametrize("channel", ["consultation.dr-lee", "consultation.dr-lee.pat-1.video", "chat.a.b"])
def test_malformed_consultation_channel_is_refused(channel: str) -> None:
    with pytest.raises(GrantRequestError) as error:
        build_grant(user_id="nurse-1", role="nurse", consultation_channel=channel, department_id="er")
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
