"""The token keeper's settings and request, exactly: each refusal's whole text and each boundary
(mutants that survived test_tokens.py moved a bound or changed a text and nothing noticed)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from telehealth_client.protocol.channels import InvalidIdError
from telehealth_client.security.tokens import LoopClock, RefreshPolicy, TokenRequest, plan

FIELDS = "(appointmentId, consultationChannel, providerId, departmentId)"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"refresh_ratio": 0.0}, "refresh_ratio: must be a number above 0 and below 1"),
        ({"warning_lead_ratio": 0}, "warning_lead_ratio: must be a number above 0 and below 1"),
        ({"warning_lead_ratio": 1}, "warning_lead_ratio: must be a number above 0 and below 1"),
        ({"jitter_ratio": 1.0}, "jitter_ratio: must be a number from 0 to below 1"),
        ({"jitter_ratio": None}, "jitter_ratio: must be a number from 0 to below 1"),
        ({"warning_lead_seconds": -0.5}, "warning_lead_seconds: must be a positive number of seconds"),
        ({"retry_min_seconds": 0}, "retry_min_seconds: must be a positive number of seconds"),
        ({"retry_max_seconds": 0.0}, "retry_max_seconds: must be a positive number of seconds"),
        ({"denial_grace_seconds": 0}, "denial_grace_seconds: must be a positive number of seconds"),
        (
            {"denial_grace_seconds": float("inf")},
            "denial_grace_seconds: must be a positive number of seconds",
        ),
        ({"denial_grace_seconds": False}, "denial_grace_seconds: must be a positive number of seconds"),
        (
            {"retry_min_seconds": 2.0, "retry_max_seconds": 1.5},
            "retry_max_seconds: must not be below retry_min_seconds",
        ),
    ],
)
def test_a_bad_policy_is_refused_with_the_exact_message(change: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError) as caught:
        RefreshPolicy(**change)
    assert str(caught.value) == message


@pytest.mark.parametrize(
    "change",
    [
        {"jitter_ratio": 0.0},
        {"jitter_ratio": 0},
        {"refresh_ratio": 0.999, "warning_lead_ratio": 0.001},
        {"retry_min_seconds": 3, "retry_max_seconds": 3},  # equal: retries at a fixed pace
        {"warning_lead_seconds": 1e-9, "denial_grace_seconds": 1e9},
    ],
)
def test_policies_at_the_edges_are_accepted(change: dict[str, Any]) -> None:
    policy = RefreshPolicy(**change)
    for name, value in change.items():
        assert getattr(policy, name) == value


def test_the_default_policy_is_the_documented_one() -> None:
    assert RefreshPolicy() == RefreshPolicy(
        refresh_ratio=0.8,
        jitter_ratio=0.05,
        warning_lead_seconds=300.0,
        warning_lead_ratio=0.2,
        retry_min_seconds=1.0,
        retry_max_seconds=60.0,
        denial_grace_seconds=30.0,
    )


def test_the_refresh_counts_from_arrival_and_the_warning_from_the_request() -> None:
    policy = RefreshPolicy(refresh_ratio=0.5, jitter_ratio=0.5, warning_lead_seconds=100.0)
    schedule = plan(policy, requested_at=10.0, received_at=25.0, ttl_minutes=10, jitter=0.5)
    assert schedule.refresh_at == 25.0 + 600.0 * 0.5 * 0.75
    assert schedule.expires_at == 610.0
    assert schedule.warn_at == 510.0  # 100 s: below 20 % of the TTL (120 s)


@pytest.mark.parametrize(
    ("role", "context", "message"),
    [
        ("Patient", {}, "role: must be one of patient, provider, nurse"),
        ("nurse ", {}, "role: must be one of patient, provider, nurse"),
        ("patient", {"zone": "x"}, f"context: 'zone' is not a token request field {FIELDS}"),
        # A caller's long key is cut: 64 characters of it, no more.
        ("patient", {"k" * 100: "x"}, f"context: {'k' * 64!r} is not a token request field {FIELDS}"),
        ("patient", {"departmentId": ""}, "departmentId: must not be empty"),
        (
            "patient",
            {"consultationChannel": "waiting-room.dr-lee"},
            "consultationChannel: consultationId: must be 'consultation.{providerId}.{patientId}'",
        ),
    ],
)
def test_a_bad_request_is_refused_with_the_exact_message(
    role: str, context: dict[str, str], message: str
) -> None:
    with pytest.raises(ValueError) as caught:
        TokenRequest("patient-1", role, context)
    assert str(caught.value) == message


def test_a_bad_consultation_channel_is_an_invalid_id_error_naming_the_request_field() -> None:
    with pytest.raises(InvalidIdError) as caught:
        TokenRequest("patient-1", "patient", {"consultationChannel": "consultation.dr-lee.p*"})
    assert caught.value.field == "consultationChannel"
    assert caught.value.reason.startswith("patientId: may contain only")


@pytest.mark.parametrize("role", ["patient", "provider", "nurse"])
def test_every_token_role_and_context_field_is_accepted(role: str) -> None:
    context = {
        "appointmentId": "appt-1",
        "consultationChannel": "consultation.dr-lee.patient-1",
        "providerId": "dr-lee",
        "departmentId": "cardiology",
    }
    request = TokenRequest("user-1", role, context)
    assert (request.user_id, request.role, request.context) == ("user-1", role, context)


async def test_the_loop_clock_waits_for_a_future_deadline_and_not_for_a_past_one() -> None:
    clock = LoopClock()
    loop = asyncio.get_running_loop()
    assert loop.time() <= clock.now() <= loop.time()
    # A past deadline: at once (a bound far above any scheduling delay, far below the mutants' 1 s).
    await asyncio.wait_for(clock.sleep_until(clock.now() - 60.0), timeout=0.9)
    # A deadline a minute away: still sleeping when a short timeout ends it.
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(clock.sleep_until(clock.now() + 60.0), timeout=0.05)
