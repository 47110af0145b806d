"""The clinic stand-in's answers to bodies it cannot read (deep JSON, huge integers, NaN, bytes that
are not UTF-8: a 400 naming the body, never a 500) and to a kiosk asking under a staff member's ID.
Found by trying it from outside.

Each test documents one defect, reproduced over real HTTP against the real clinic stand-in (and
the real relay where a token is minted); each failed before its fix.
"""

from __future__ import annotations

import json
import logging

import pytest

from telehealth_devstack.clinic import Clinic
from tests.support.clinic import (
    AUDITOR_CREDENTIAL,
    CART_CREDENTIALS,
    KIOSK_CREDENTIAL,
    ClinicApi,
    audit_event,
    grant_consent,
)

pytestmark = pytest.mark.integration

NOT_A_PATIENT = "is a staff member's user ID, not a patient's"


def provider_audit_event(metadata: str) -> bytes:
    """A provider's audit event whose ``metadata`` is the raw JSON text given."""
    event = audit_event(
        eventType="ACCESS_DENIED",
        actor={"userId": "dr-lee", "role": "provider"},
        action="subscribe",
        outcome="failure",
        metadata={},
    )
    return json.dumps(event).replace('"metadata": {}', f'"metadata": {metadata}').encode()


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"[" * 20_000 + b"]" * 20_000, "nests deeper"),
        (
            b'{"patientId": "pat-1", "granted": true, "expiresAt": ' + b"[" * 2_000 + b"]" * 2_000 + b"}",
            "nests deeper",
        ),
        (b'{"patientId": "pat-1", "granted": true, "expiresAt": ' + b"9" * 5_000 + b"}", "JSON object"),
    ],
    ids=["deep body", "deep field", "5000-digit integer"],
)
async def test_deep_json_or_a_huge_integer_is_a_400_naming_the_body_not_a_500_with_a_traceback(
    offline_clinic: Clinic, http: ClinicApi, caplog: pytest.LogCaptureFixture, body: bytes, reason: str
) -> None:
    # Defect: json.loads raised RecursionError (or ValueError past 4,300 digits), answered 500
    # "internal error" and logged a traceback.
    api = http.at(offline_clinic)
    with caplog.at_level(logging.DEBUG):
        status, answer = await api.post("/api/telemedicine/consent", raw=body)
    assert status == 400, answer
    assert answer["field"] == "body"
    assert reason in answer["reason"]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert await offline_clinic.consent("pat-1") is None


async def test_nan_and_infinity_are_refused_so_the_audit_sink_stays_readable_json(
    offline_clinic: Clinic, http: ClinicApi
) -> None:
    # Defect: a provider cart stored {"x": NaN, "y": Infinity} in the append-only audit sink, and
    # from then on GET /api/audit-events answered text that no strict JSON parser (a browser's
    # JSON.parse) reads: one event made the whole audit trail unreadable.
    api = http.at(offline_clinic)
    for constant in ("NaN", "Infinity", "-Infinity", "1e999"):
        status, answer = await api.post(
            "/api/audit-events",
            raw=provider_audit_event(f'{{"x": {constant}}}'),
            credential=CART_CREDENTIALS["dr-lee"],
        )
        assert status == 400, (constant, answer)
        assert answer["field"] == "body"
    assert await offline_clinic.audit_events() == []
    status, answer = await api.get("/api/audit-events", credential=AUDITOR_CREDENTIAL)
    assert (status, answer) == (200, {"events": []})


async def test_a_body_that_is_not_utf8_says_so(offline_clinic: Clinic, http: ClinicApi) -> None:
    # Defect: answered "body: must be a JSON object", which sends the integrator looking elsewhere.
    api = http.at(offline_clinic)
    body = b'{"patientId": "pat-\xff", "granted": true, "expiresAt": null}'
    status, answer = await api.post("/api/telemedicine/consent", raw=body)
    assert status == 400
    assert (answer["field"], answer["reason"]) == ("body", "must be UTF-8 JSON")


@pytest.mark.parametrize("staff", ["dr-lee", "nurse-1", "dr-nowak"])
async def test_the_kiosk_gets_no_patient_token_or_consent_under_a_staff_members_id(
    clinic: Clinic, http: ClinicApi, staff: str
) -> None:
    # Defect: the kiosk credential recorded consent for patient "dr-lee" and then got a patient
    # token whose authorizedUUID was dr-lee: it read dr-lee's notification channel (invitations,
    # other patients' PATIENT_READY) and App Context, and published as dr-lee.
    api = http.at(clinic)
    status, answer = await api.post(
        "/api/telemedicine/consent", {"patientId": staff, "granted": True, "expiresAt": None}
    )
    assert status == 403, answer
    assert (answer["field"], answer["reason"]) == ("patientId", NOT_A_PATIENT)
    assert await clinic.consent(staff) is None
    status, answer = await api.post(
        "/api/telemedicine/token",
        {"userId": staff, "role": "patient", "providerId": "dr-okafor"},
        credential=KIOSK_CREDENTIAL,
    )
    assert status == 403, answer
    assert (answer["field"], answer["reason"]) == ("userId", NOT_A_PATIENT)
    assert clinic.ledger.live_tokens(staff, f"consultation.dr-okafor.{staff}") == []
    # A patient still gets one.
    await grant_consent(api, "pat-1")
    status, answer = await api.post(
        "/api/telemedicine/token", {"userId": "pat-1", "role": "patient", "providerId": "dr-okafor"}
    )
    assert status == 200, answer
