"""The token keeper's pure parts: its schedule, its settings and its request, checked without I/O."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from telehealth_client.protocol.channels import InvalidIdError
from telehealth_client.security.tokens import (
    RefreshPolicy,
    TokenAccessDenied,
    TokenExpired,
    TokenExpiring,
    TokenGranted,
    TokenRefreshed,
    TokenRequest,
    plan,
)


def test_a_token_is_refreshed_at_80_percent_of_its_ttl_after_it_arrived() -> None:
    schedule = plan(RefreshPolicy(), requested_at=1000.0, received_at=1002.0, ttl_minutes=60, jitter=0.0)
    assert schedule.refresh_at == 1002.0 + 2880.0
    # Expiry counts from the request: the server cannot have issued it earlier.
    assert schedule.expires_at == 1000.0 + 3600.0


def test_jitter_only_brings_the_refresh_earlier_by_at_most_its_share() -> None:
    policy = RefreshPolicy(jitter_ratio=0.05)
    latest = plan(policy, requested_at=0.0, received_at=0.0, ttl_minutes=60, jitter=0.0)
    earliest = plan(policy, requested_at=0.0, received_at=0.0, ttl_minutes=60, jitter=0.999999)
    assert latest.refresh_at == 2880.0
    assert 2880.0 * 0.95 <= earliest.refresh_at < 2880.0 * 0.9501


def test_the_warning_comes_5_minutes_before_expiry_or_20_percent_of_a_short_ttl() -> None:
    policy = RefreshPolicy()
    hour = plan(policy, requested_at=0.0, received_at=0.0, ttl_minutes=60, jitter=0.0)
    assert hour.expires_at - hour.warn_at == 300.0
    patient = plan(policy, requested_at=0.0, received_at=0.0, ttl_minutes=15, jitter=0.0)
    assert patient.expires_at - patient.warn_at == 180.0  # 20 % of 15 minutes
    minute = plan(policy, requested_at=0.0, received_at=0.0, ttl_minutes=1, jitter=0.0)
    assert minute.expires_at - minute.warn_at == 12.0
    # With the default ratios the warning never comes before the first refresh attempt.
    for ttl in (1, 15, 25, 60, 1440):
        schedule = plan(policy, requested_at=0.0, received_at=0.0, ttl_minutes=ttl, jitter=0.0)
        assert schedule.warn_at >= schedule.refresh_at


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"refresh_ratio": 0}, "refresh_ratio: must be a number above 0 and below 1"),
        ({"refresh_ratio": 1.0}, "refresh_ratio: must be a number above 0 and below 1"),
        ({"refresh_ratio": True}, "refresh_ratio: must be a number above 0 and below 1"),
        ({"refresh_ratio": "0.8"}, "refresh_ratio: must be a number above 0 and below 1"),
        ({"jitter_ratio": -0.1}, "jitter_ratio: must be a number from 0 to below 1"),
        ({"warning_lead_ratio": 1.5}, "warning_lead_ratio: must be a number above 0 and below 1"),
        ({"warning_lead_seconds": 0}, "warning_lead_seconds: must be a positive number of seconds"),
        ({"retry_min_seconds": float("nan")}, "retry_min_seconds: must be a positive number of seconds"),
        ({"retry_max_seconds": float("inf")}, "retry_max_seconds: must be a positive number of seconds"),
        ({"denial_grace_seconds": -1}, "denial_grace_seconds: must be a positive number of seconds"),
        ({"retry_min_seconds": 5, "retry_max_seconds": 4}, "retry_max_seconds: must not be below retry_min"),
    ],
)
def test_a_bad_policy_is_refused_naming_the_field(change: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RefreshPolicy(**change)


def test_a_good_request_keeps_its_own_copy_of_the_context() -> None:
    context = {"providerId": "dr-lee", "appointmentId": "appt-1"}
    request = TokenRequest("patient-1", "patient", context)
    context["providerId"] = "dr-other"
    assert request.context == {"providerId": "dr-lee", "appointmentId": "appt-1"}
    TokenRequest(
        "dr-lee", "provider", {"consultationChannel": "consultation.dr-lee.p-1", "departmentId": "er"}
    )


@pytest.mark.parametrize(
    ("user_id", "role", "context", "message"),
    [
        ("patient.1", "patient", {}, "userId: may contain only"),
        ("", "patient", {}, "userId: must not be empty"),
        ("patient-1", "doctor", {}, "role: must be one of patient, provider, nurse"),
        ("patient-1", "patient", {"userId": "x"}, "context: 'userId' is not a token request field"),
        ("patient-1", "patient", {"providerId": "dr*"}, "providerId: may contain only"),
        ("patient-1", "patient", {"appointmentId": "a" * 65}, "appointmentId: must be at most 64"),
        (
            "patient-1",
            "patient",
            {"consultationChannel": "consultation.dr-lee"},
            "consultationChannel: consultationId: must be 'consultation.{providerId}.{patientId}'",
        ),
        (
            "patient-1",
            "patient",
            {"consultationChannel": "consultation.dr lee.p"},
            "consultationChannel: providerId: may contain only",
        ),
    ],
)
def test_a_bad_request_is_refused_naming_the_field(
    user_id: str, role: str, context: dict[str, str], message: str
) -> None:
    with pytest.raises(ValueError, match=message.replace("*", r"\*").replace("{", r"\{").replace("}", r"\}")):
        TokenRequest(user_id, role, context)


def test_an_invalid_id_is_an_invalid_id_error() -> None:
    with pytest.raises(InvalidIdError) as caught:
        TokenRequest("patient-1", "patient", {"departmentId": "a.b"})
    assert caught.value.field == "departmentId"


def test_events_say_their_kind_and_carry_no_token() -> None:
    events = [
        TokenGranted("p", "patient", 15),
        TokenRefreshed("p", "patient", 15, "scheduled"),
        TokenExpiring("p", "patient", 180.0, 3),
        TokenExpired("p", "patient", 9),
        TokenAccessDenied("p", "patient", "publish", "still refused after a refresh"),
    ]
    assert [event.kind for event in events] == [
        "granted",
        "refreshed",
        "expiring",
        "expired",
        "access-denied",
    ]
    for event in events:
        assert not any("token" in name for name in (f.name for f in dataclasses.fields(event)))
        with pytest.raises(TypeError):
            type(event)(*dataclasses.astuple(event))  # kind is not the caller's to set
