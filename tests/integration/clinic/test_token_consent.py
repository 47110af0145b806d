"""The token server refuses a patient token without granted, unexpired telehealth consent.

Consent is the clinic's own record, written (with its App Context copy) by the kiosk through
``POST /api/telemedicine/consent``. A refusal is 403 naming ``consent`` and the reason
(``missing``, ``not granted``, ``expired``), and grants nothing.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from telehealth_client.security.clinic_client import ClinicClient, ClinicError
from telehealth_devstack.clinic import Clinic
from tests.support.clinic import KIOSK_CREDENTIAL, ClinicApi

pytestmark = pytest.mark.integration

PATIENT = {"userId": "pat-1", "role": "patient", "providerId": "dr-lee"}
CONSULTATION = "consultation.dr-lee.pat-1"


def iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


async def record(api: ClinicApi, granted: bool, expires_at: str | None) -> None:
    body = {"patientId": "pat-1", "granted": granted, "expiresAt": expires_at}
    assert (await api.post("/api/telemedicine/consent", body))[0] == 200


@pytest.mark.parametrize(
    ("consent", "reason"),
    [
        (None, "missing"),
        ({"granted": False, "expiresAt": None}, "not granted"),
        ({"granted": False, "expiresAt": "2099-01-01T00:00:00Z"}, "not granted"),
        ({"granted": True, "expiresAt": "2020-01-01T00:00:00.000Z"}, "expired"),
    ],
)
async def test_a_patient_token_needs_granted_unexpired_consent(
    clinic: Clinic, http: ClinicApi, consent: dict[str, Any] | None, reason: str
) -> None:
    api = http.at(clinic)
    if consent is not None:
        await record(api, consent["granted"], consent["expiresAt"])
    status, answer = await api.post("/api/telemedicine/token", PATIENT)
    assert status == 403
    assert (answer["field"], answer["reason"], answer["error"]) == ("consent", reason, f"consent: {reason}")
    assert "token" not in answer
    assert clinic.ledger.live_tokens("pat-1", CONSULTATION) == []


@pytest.mark.parametrize(
    "expires_at", [None, iso(datetime.now(UTC) + timedelta(days=1))], ids=["no-expiry", "expires-tomorrow"]
)
async def test_granted_consent_without_expiry_or_expiring_later_gets_the_token(
    clinic: Clinic, http: ClinicApi, expires_at: str | None
) -> None:
    api = http.at(clinic)
    await record(api, True, expires_at)
    status, answer = await api.post("/api/telemedicine/token", PATIENT)
    assert status == 200, answer
    assert len(clinic.ledger.live_tokens("pat-1", CONSULTATION)) == 1


async def test_withdrawn_consent_refuses_the_next_token(clinic: Clinic, http: ClinicApi) -> None:
    api = http.at(clinic)
    await record(api, True, None)
    assert (await api.post("/api/telemedicine/token", PATIENT))[0] == 200
    await record(api, False, None)
    status, answer = await api.post("/api/telemedicine/token", PATIENT)
    assert (status, answer["field"], answer["reason"]) == (403, "consent", "not granted")


async def test_consent_is_per_patient(clinic: Clinic, http: ClinicApi) -> None:
    api = http.at(clinic)
    await record(api, True, None)
    status, answer = await api.post("/api/telemedicine/token", {**PATIENT, "userId": "pat-2"})
    assert (status, answer["field"], answer["reason"]) == (403, "consent", "missing")


async def test_the_clinic_client_surfaces_the_consent_reason(clinic: Clinic) -> None:
    kiosk = ClinicClient(clinic.url, KIOSK_CREDENTIAL)
    try:
        with pytest.raises(ClinicError) as refused:
            await kiosk.request_token("pat-1", "patient", providerId="dr-lee")
    finally:
        await kiosk.aclose()
    assert refused.value.status == 403
    assert "refused: consent: missing" in str(refused.value)
