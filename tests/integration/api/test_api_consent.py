"""The consent read through a kiosk's local API on the real stack: what the clinic says of a
patient's consent for a check-in (granted, or missing, not granted, expired), read as check-in reads
it without checking in; refused while a consultation runs, and 422 naming the field the clinic or
the model refused."""

from __future__ import annotations

import pytest

from telehealth_client.security.clinic_client import ClinicClient
from telehealth_devstack.stack import DevStack
from tests.support.api import (
    APPOINTMENT,
    CHECK_IN,
    KIOSK,
    PATIENT,
    PROVIDER,
    RunningAgent,
    record_consent,
)

pytestmark = pytest.mark.integration

READ = {"patientId": PATIENT, "providerId": PROVIDER, "appointmentId": APPOINTMENT}


async def recorded(stack: DevStack, patient: str, granted: bool, expires_at: str | None) -> None:
    assert stack.clinic is not None
    clinic = ClinicClient(stack.clinic.url, stack.kiosk_credential(KIOSK))
    try:
        await clinic.record_consent(patient, granted, expires_at)
    finally:
        await clinic.aclose()


async def test_the_consent_read_says_what_the_clinic_says(kiosk: RunningAgent, stack: DevStack) -> None:
    status, answer = await kiosk.api.post("/v1/consent/read", READ)
    assert (status, answer) == (
        200,
        {
            "patientId": PATIENT,
            "providerId": PROVIDER,
            "granted": False,
            "refusal": "missing",
            "expiresAt": None,
        },
    )
    await record_consent(stack)
    status, answer = await kiosk.api.post("/v1/consent/read", READ)
    assert (status, answer["granted"], answer["refusal"]) == (200, True, None), answer

    await recorded(stack, "pat-declined", False, None)
    await recorded(stack, "pat-lapsed", True, "2020-01-01T00:00:00.000Z")
    for patient, refusal in (("pat-declined", "not granted"), ("pat-lapsed", "expired")):
        status, answer = await kiosk.api.post(
            "/v1/consent/read", {"patientId": patient, "providerId": PROVIDER}
        )
        assert (status, answer["granted"], answer["refusal"]) == (200, False, refusal), answer

    # Reading checked no one in: the kiosk is idle and holds no pub/sub connection.
    status, state = await kiosk.api.get("/v1/status")
    assert (status, state["status"], state["consultations"], state["pubsub"]) == (200, "idle", [], "idle")


async def test_a_bad_read_is_422_naming_the_field(kiosk: RunningAgent) -> None:
    status, answer = await kiosk.api.post("/v1/consent/read", {"patientId": "pat 1", "extra": True})
    assert (status, answer["error"]) == (422, "invalid-body")
    assert {problem["field"] for problem in answer["fields"]} == {"patientId", "providerId", "extra"}
    # A staff member's ID is no patient's: the clinic refuses it, named as the API names it.
    status, answer = await kiosk.api.post("/v1/consent/read", {"patientId": PROVIDER, "providerId": PROVIDER})
    assert (status, answer["error"]) == (422, "invalid-body"), answer
    assert [problem["field"] for problem in answer["fields"]] == ["patientId"]


async def test_no_read_while_a_consultation_runs(kiosk: RunningAgent, stack: DevStack) -> None:
    await record_consent(stack)
    assert (await kiosk.api.post("/v1/check-in", CHECK_IN))[0] == 201
    status, answer = await kiosk.api.post("/v1/consent/read", READ)
    assert (status, answer["error"]) == (409, "busy")
    assert answer["state"] in ("checked-in", "waiting")
