"""The agent's clinic client against the real clinic stand-in."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from telehealth_client.security.clinic_client import ClinicClient, ClinicError, SinkAcknowledgement
from telehealth_devstack.clinic import Clinic, RateLimit
from telehealth_devstack.relay import Relay
from telehealth_devstack.relay.clock import ManualClock
from tests.support.clinic import CART_CREDENTIALS, KIOSK_CREDENTIAL, KIOSK_ID, ORGANIZATION, ClinicFactory


@pytest.fixture
async def kiosk_client(clinic: Clinic) -> AsyncIterator[ClinicClient]:
    """The kiosk's client; patient-1 has granted telehealth consent (a patient token needs it)."""
    client = ClinicClient(clinic.url, KIOSK_CREDENTIAL)
    consent = await client.record_consent("patient-1", True, None)
    assert (consent.granted, consent.expires_at) == (True, None)
    yield client
    await client.aclose()


async def test_a_kiosk_gets_a_patient_token_with_its_channel_config(kiosk_client: ClinicClient) -> None:
    grant = await kiosk_client.request_token("patient-1", "patient", providerId="dr-lee")
    assert grant.token
    assert grant.ttl_minutes == 15
    assert grant.channel_config["consultationChannel"] == "consultation.dr-lee.patient-1"


async def test_a_provider_gets_its_standing_token_with_a_department_only(clinic: Clinic) -> None:
    cart = ClinicClient(clinic.url, CART_CREDENTIALS["dr-lee"])
    try:
        grant = await cart.request_token(
            "dr-lee", "provider", departmentId="cardiology", consultationChannel=None
        )
    finally:
        await cart.aclose()
    assert grant.ttl_minutes == 60
    assert grant.channel_config["waitingRoom"] == "waiting-room.dr-lee"
    assert "consultationChannel" not in grant.channel_config


async def test_an_unknown_token_request_field_is_refused_before_asking(kiosk_client: ClinicClient) -> None:
    with pytest.raises(ValueError, match="departmentID: is not a token request field"):
        await kiosk_client.request_token("dr-lee", "provider", departmentID="cardiology")


async def test_consent_is_recorded_as_the_clinic_stored_it(
    clinic: Clinic, kiosk_client: ClinicClient
) -> None:
    consent = await kiosk_client.record_consent("patient-2", True, "2027-01-31T23:59:59+00:00")
    assert (consent.granted, consent.expires_at) == (True, "2027-01-31T23:59:59.000Z")
    assert await clinic.consent("patient-2") == {"granted": True, "expiresAt": "2027-01-31T23:59:59.000Z"}
    with pytest.raises(ClinicError) as refused:
        await kiosk_client.record_consent("patient.2", True, None)
    assert refused.value.status == 400
    assert "refused: patientId:" in str(refused.value)


async def test_turn_credentials_are_read(kiosk_client: ClinicClient) -> None:
    turn = await kiosk_client.turn_credentials("patient-1")
    assert turn.urls and turn.username.endswith(":patient-1") and turn.credential
    assert turn.ttl_seconds > 0


async def test_a_refusal_names_the_field_and_reason(kiosk_client: ClinicClient) -> None:
    with pytest.raises(ClinicError) as caught:
        await kiosk_client.request_token("patient-1", "patient")
    assert caught.value.status == 400
    assert "refused: providerId: is required for role patient" in str(caught.value)
    with pytest.raises(ClinicError) as forbidden:
        await kiosk_client.request_token(
            "dr-lee", "provider", consultationChannel="consultation.dr-lee.p", departmentId="c"
        )
    assert forbidden.value.status == 403


async def test_a_wrong_credential_and_an_absent_backend_are_clinic_errors(clinic: Clinic) -> None:
    wrong = ClinicClient(clinic.url, "not-a-credential")
    try:
        with pytest.raises(ClinicError) as caught:
            await wrong.turn_credentials("patient-1")
        assert caught.value.status == 401
    finally:
        await wrong.aclose()
    nowhere = ClinicClient("http://127.0.0.1:9", KIOSK_CREDENTIAL, timeout_seconds=2)
    try:
        with pytest.raises(ClinicError, match="unreachable"):
            await nowhere.turn_credentials("patient-1")
    finally:
        await nowhere.aclose()


async def test_revoke_access_returns_how_many_tokens_were_revoked(
    clinic: Clinic, kiosk_client: ClinicClient
) -> None:
    for _ in range(2):
        await kiosk_client.request_token("patient-1", "patient", providerId="dr-lee")
    provider = ClinicClient(clinic.url, CART_CREDENTIALS["dr-lee"])
    try:
        assert await provider.revoke_access("patient-1", "consultation.dr-lee.patient-1") == 2
        assert await provider.revoke_access("patient-1", "consultation.dr-lee.patient-1") == 0
    finally:
        await provider.aclose()
    with pytest.raises(ClinicError) as refused:
        await kiosk_client.revoke_access("patient-1", "consultation.dr-lee.patient-1")
    assert refused.value.status == 403
    assert "refused: Authorization:" in str(refused.value)


def sequenced_event(sequence: int, device_id: str = KIOSK_ID) -> dict[str, Any]:
    return {
        "id": str(uuid.uuid4()),
        "timestamp": "2026-11-22T14:03:07.123Z",
        "eventType": "DEVICE_CHECK_COMPLETED",
        "severity": "info",
        "organizationId": ORGANIZATION,
        "actor": {"userId": KIOSK_ID, "role": "patient"},
        "resource": {"type": "device", "id": KIOSK_ID},
        "action": "check",
        "outcome": "success",
        "metadata": {},
        "deviceId": device_id,
        "sequence": sequence,
    }


async def test_the_sinks_acknowledgement_and_head_are_returned_parsed(
    clinic: Clinic, kiosk_client: ClinicClient
) -> None:
    assert await kiosk_client.post_audit_event(sequenced_event(1)) == SinkAcknowledgement(
        deviceId=KIOSK_ID, highestSequence=1
    )
    acknowledged = await kiosk_client.post_audit_event(sequenced_event(3))
    assert (acknowledged.device_id, acknowledged.highest_sequence) == (KIOSK_ID, 1)
    head = await kiosk_client.audit_head(KIOSK_ID)
    assert (head.device_id, head.highest_sequence) == (KIOSK_ID, 1)

    with pytest.raises(ClinicError) as reused:
        await kiosk_client.post_audit_event(sequenced_event(1))
    assert (reused.value.status, reused.value.reason.startswith("refused: sequence:")) == (409, True)
    with pytest.raises(ClinicError) as not_its_own:
        await kiosk_client.audit_head("dr-lee")
    assert not_its_own.value.status == 403


async def test_a_provider_assigns_a_nurse_who_may_then_ask_for_the_consultation(clinic: Clinic) -> None:
    provider = ClinicClient(clinic.url, CART_CREDENTIALS["dr-lee"])
    nurse = ClinicClient(clinic.url, CART_CREDENTIALS["nurse-1"])
    consultation = "consultation.dr-lee.patient-1"
    try:
        with pytest.raises(ClinicError) as refused:
            await nurse.request_token(
                "nurse-1", "nurse", departmentId="cardiology", consultationChannel=consultation
            )
        assert refused.value.status == 403
        assignment = await provider.assign_nurse(consultation, "nurse-1")
        assert (assignment.consultation_channel, assignment.nurse_id, assignment.assigned_by) == (
            consultation,
            "nurse-1",
            "dr-lee",
        )
        grant = await nurse.request_token(
            "nurse-1", "nurse", departmentId="cardiology", consultationChannel=consultation
        )
        assert grant.channel_config["consultationChannel"] == consultation
        with pytest.raises(ClinicError) as not_the_provider:
            await nurse.assign_nurse(consultation, "nurse-1")
        assert not_the_provider.value.status == 403
    finally:
        await provider.aclose()
        await nurse.aclose()


async def test_a_rate_limited_answer_carries_its_retry_after(
    make_clinic: ClinicFactory, clinic_relay: Relay
) -> None:
    # The clinic's clock stands still: the answer's Retry-After is exactly a minute, whatever the pace.
    limited = await make_clinic(
        relay_origin=clinic_relay.origin,
        patient_token_limit=RateLimit(per_minute=1, burst=1),
        clock=ManualClock(),
    )
    client = ClinicClient(limited.url, KIOSK_CREDENTIAL)
    try:
        await client.record_consent("patient-1", True, None)
        await client.request_token("patient-1", "patient", providerId="dr-lee")
        with pytest.raises(ClinicError) as limited_answer:
            await client.request_token("patient-1", "patient", providerId="dr-lee")
    finally:
        await client.aclose()
    assert limited_answer.value.status == 429
    assert limited_answer.value.retry_after == 60
    assert not limited_answer.value.refused  # not a verdict: asking later may pass


async def test_a_short_retry_after_is_waited_out_and_the_request_made_once_more(
    make_clinic: ClinicFactory, clinic_relay: Relay
) -> None:
    clock = ManualClock()
    limited = await make_clinic(
        relay_origin=clinic_relay.origin, patient_token_limit=RateLimit(per_minute=60, burst=1), clock=clock
    )
    waited: list[float] = []

    async def sleep(seconds: float) -> None:  # the clinic's time passes; the test's does not
        waited.append(seconds)
        clock.advance(seconds)

    client = ClinicClient(limited.url, KIOSK_CREDENTIAL, sleep=sleep)
    try:
        await client.record_consent("patient-1", True, None)
        await client.request_token("patient-1", "patient", providerId="dr-lee")
        grant = await client.request_token("patient-1", "patient", providerId="dr-lee")
    finally:
        await client.aclose()
    assert grant.token
    assert waited == [1.0]  # the server's Retry-After, once
