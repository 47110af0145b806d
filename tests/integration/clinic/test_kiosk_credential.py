"""A check-in kiosk's credential acts only for patients and its own device (issue 20, finding 4).

Patient tokens only for patients (not staff, not a device) of a provider in the clinic's directory;
TURN credentials and audit events only for a patient or the kiosk's own device ID; patient token
minting limited per kiosk credential (429 with ``Retry-After`` beyond it). Real clinic over HTTP,
the real PubNub SDK against the enforcing relay where a token's power matters.
"""

from __future__ import annotations

from typing import Any

import pytest

from telehealth_devstack.clinic import Clinic, RateLimit
from telehealth_devstack.relay import Relay
from telehealth_devstack.relay.clock import ManualClock
from tests.support.clinic import (
    CART_CREDENTIALS,
    KIOSK_CREDENTIAL,
    KIOSK_ID,
    OTHER_KIOSK_CREDENTIAL,
    OTHER_KIOSK_ID,
    ClientFactory,
    ClinicApi,
    ClinicFactory,
    audit_event,
    grant_consent,
    publish,
)

pytestmark = pytest.mark.integration

TOKEN = "/api/telemedicine/token"
TURN = "/api/telemedicine/turn-credentials"
AUDIT = "/api/audit-events"


def patient_token(patient_id: str = "pat-1", **fields: str) -> dict[str, Any]:
    return {"userId": patient_id, "role": "patient", **(fields or {"providerId": "dr-lee"})}


@pytest.mark.parametrize(
    ("body", "field", "reason_part"),
    [
        # The provider named must be a provider: another patient, a nurse or a stranger gets no
        # patient token that writes its notification channel and waiting room.
        (patient_token(providerId="pat-2"), "providerId", "not a provider"),
        (patient_token(providerId="nurse-1"), "providerId", "not a provider"),
        (patient_token(providerId="dr-unknown"), "providerId", "not a provider"),
        (
            patient_token(consultationChannel="consultation.pat-2.pat-1"),
            "consultationChannel",
            "not a provider",
        ),
        (
            patient_token(consultationChannel="consultation.nurse-1.pat-1"),
            "consultationChannel",
            "not a provider",
        ),
        # The patient must be a patient: not staff, not the kiosk itself, not another device.
        (patient_token("dr-okafor"), "userId", "staff member"),
        (patient_token("nurse-1"), "userId", "staff member"),
        (patient_token(KIOSK_ID), "userId", "device"),
        (patient_token(OTHER_KIOSK_ID), "userId", "device"),
        (patient_token("auditor-1"), "userId", "device"),
    ],
)
async def test_a_kiosk_gets_no_patient_token_beyond_patients_of_a_provider(
    enforcing_relay: Relay,
    clinic: Clinic,
    http: ClinicApi,
    make_client: ClientFactory,
    body: dict[str, Any],
    field: str,
    reason_part: str,
) -> None:
    api = http.at(clinic)
    await grant_consent(api, "pat-1")
    status, answer = await api.post(TOKEN, body)
    assert (status, answer["field"]) == (403, field), answer
    assert reason_part in answer["reason"]
    assert "token" not in answer
    assert clinic.ledger.live_tokens(body["userId"], "consultation.pat-2.pat-1") == []
    # The kiosk's rightful request still works, and its token writes only its own provider's rooms.
    status, granted = await api.post(TOKEN, patient_token())
    assert status == 200, granted
    patient = make_client("pat-1", token=granted["token"])
    assert await publish(patient, "waiting-room.dr-lee") == 200
    assert await publish(patient, "notification.dr-lee") == 200
    assert await publish(patient, "waiting-room.pat-2") == 403
    assert await publish(patient, "notification.pat-2") == 403


@pytest.mark.parametrize(
    ("credential", "user_id", "status", "field"),
    [
        (KIOSK_CREDENTIAL, "pat-7", 200, None),  # a patient it serves
        (KIOSK_CREDENTIAL, KIOSK_ID, 200, None),  # its own device: preflight, idle device checks
        (KIOSK_CREDENTIAL, OTHER_KIOSK_ID, 403, "userId"),
        (KIOSK_CREDENTIAL, "dr-lee", 403, "userId"),
        (KIOSK_CREDENTIAL, "nurse-1", 403, "userId"),
        (KIOSK_CREDENTIAL, "auditor-1", 403, "userId"),
        (OTHER_KIOSK_CREDENTIAL, OTHER_KIOSK_ID, 200, None),
        (OTHER_KIOSK_CREDENTIAL, KIOSK_ID, 403, "userId"),
    ],
)
async def test_a_kiosk_gets_turn_credentials_for_patients_and_its_own_device_only(
    offline_clinic: Clinic, http: ClinicApi, credential: str, user_id: str, status: int, field: str | None
) -> None:
    answered, answer = await http.at(offline_clinic).post(TURN, {"userId": user_id}, credential=credential)
    assert answered == status, answer
    if field is None:
        assert answer["username"].endswith(f":{user_id}")
    else:
        assert answer["field"] == field
        assert "credential" not in answer


@pytest.mark.parametrize(
    ("credential", "actor_id", "device_id", "status", "field"),
    [
        (KIOSK_CREDENTIAL, "pat-7", None, 201, None),
        (KIOSK_CREDENTIAL, KIOSK_ID, KIOSK_ID, 201, None),
        (OTHER_KIOSK_CREDENTIAL, OTHER_KIOSK_ID, OTHER_KIOSK_ID, 201, None),
        # A provider (or nurse) as the actor of a kiosk's event: a false attribution.
        (KIOSK_CREDENTIAL, "dr-lee", None, 403, "actor.userId"),
        (KIOSK_CREDENTIAL, "nurse-1", None, 403, "actor.userId"),
        # Another kiosk's device, as actor or as the recording device.
        (KIOSK_CREDENTIAL, OTHER_KIOSK_ID, None, 403, "actor.userId"),
        (KIOSK_CREDENTIAL, "pat-7", OTHER_KIOSK_ID, 403, "deviceId"),
    ],
)
async def test_a_kiosks_audit_event_is_for_a_patient_or_its_own_device_only(
    offline_clinic: Clinic,
    http: ClinicApi,
    credential: str,
    actor_id: str,
    device_id: str | None,
    status: int,
    field: str | None,
) -> None:
    extra = {} if device_id is None else {"deviceId": device_id}
    event = audit_event(actor={"userId": actor_id, "role": "patient"}, **extra)
    answered, answer = await http.at(offline_clinic).post(AUDIT, event, credential=credential)
    assert answered == status, answer
    if field is None:
        assert await offline_clinic.audit_events() == [event]
    else:
        assert answer["field"] == field
        assert await offline_clinic.audit_events() == []


@pytest.mark.parametrize("patient_id", ["dr-lee", "nurse-1", KIOSK_ID, OTHER_KIOSK_ID])
async def test_a_kiosk_records_consent_for_patients_only(
    offline_clinic: Clinic, http: ClinicApi, patient_id: str
) -> None:
    body = {"patientId": patient_id, "granted": True, "expiresAt": None}
    status, answer = await http.at(offline_clinic).post("/api/telemedicine/consent", body)
    assert (status, answer["field"]) == (403, "patientId")
    assert await offline_clinic.consent(patient_id) is None


async def test_patient_token_minting_is_limited_per_kiosk_with_retry_after(
    make_clinic: ClinicFactory, clinic_relay: Relay, http: ClinicApi
) -> None:
    # The clinic's clock moves only when told: refill is shown without waiting.
    clock = ManualClock()
    clinic = await make_clinic(
        relay_origin=clinic_relay.origin, clock=clock, patient_token_limit=RateLimit(per_minute=6, burst=3)
    )
    api = http.at(clinic)
    patients = [f"pat-{number}" for number in range(5)]
    for patient in patients:
        await grant_consent(api, patient)
    for patient in patients[:3]:
        status, answer = await api.post(TOKEN, patient_token(patient))
        assert status == 200, answer

    async def refused(patient: str, credential: str = KIOSK_CREDENTIAL) -> tuple[str, Any]:
        status, answer = await api.post(TOKEN, patient_token(patient), credential=credential)
        assert status == 429, answer
        return api.last_headers["Retry-After"], answer

    retry_after, answer = await refused(patients[3])
    # 6 a minute: the next one is 10 s away, said in whole seconds.
    assert retry_after == "10"
    assert answer["field"] == "rateLimit"
    assert "retry after 10 s" in answer["reason"]
    assert clinic.ledger.live_tokens(patients[3], "consultation.dr-lee.pat-3") == []
    # Still refused a moment later, with the time left.
    clock.advance(4)
    assert (await refused(patients[3]))[0] == "6"
    # Another kiosk has its own allowance.
    status, _ = await api.post(TOKEN, patient_token(patients[4]), credential=OTHER_KIOSK_CREDENTIAL)
    assert status == 200
    # Refilled at the limit's pace: one more, then refused again.
    clock.advance(6)
    assert (await api.post(TOKEN, patient_token(patients[3])))[0] == 200
    assert (await refused(patients[4]))[0] == "10"
    # A staff cart is not a kiosk: its tokens are not counted against any.
    staff = {"userId": "dr-lee", "role": "provider", "departmentId": "cardiology"}
    for _ in range(5):
        assert (await api.post(TOKEN, staff, credential=CART_CREDENTIALS["dr-lee"]))[0] == 200


@pytest.mark.parametrize(
    ("per_minute", "burst"), [(0, 1), (-1, 1), (float("inf"), 1), (1, 0), (1, 1.5), (1, True)]
)
def test_a_bad_rate_limit_is_refused(per_minute: float, burst: Any) -> None:
    with pytest.raises(ValueError, match=r"per_minute|burst"):
        RateLimit(per_minute=per_minute, burst=burst)
