"""The kiosk's routes: read the patient's consent, check the patient in, leave."""

from __future__ import annotations

from telehealth_client.api.errors import ApiError
from telehealth_client.api.models import (
    Accepted,
    CheckInAnswer,
    CheckInRequest,
    ConsentAnswer,
    ConsentReadRequest,
)
from telehealth_client.api.routing import PATIENT, Call, Route
from telehealth_client.api.views import consultation_view
from telehealth_client.consultation.patient import PatientEndpoint


def patient_of(call: Call) -> PatientEndpoint:
    patient = call.agent.patient
    if patient is None:  # the role checks come first: only while the agent starts or stops
        raise ApiError(409, "not-started", "the kiosk's endpoint is not running", state="none")
    return patient


async def check_in(call: Call) -> CheckInAnswer:
    patient = patient_of(call)
    if not patient.idle:
        raise ApiError(
            409, "busy", "a consultation is already under way on this kiosk", state=str(patient.state)
        )
    body: CheckInRequest = call.body
    session = await patient.check_in(
        appointment_id=body.appointment_id,
        patient_id=body.patient_id,
        provider_id=body.provider_id,
        department_id=body.department_id,
    )
    return CheckInAnswer(consultation=consultation_view(session, patient.call))


async def read_consent(call: Call) -> ConsentAnswer:
    """What the clinic says of the patient's consent for such a check-in (a patient token asked
    for and dropped, the consent record read with it): nothing is published or checked in."""
    patient = patient_of(call)
    if not patient.idle:
        raise ApiError(
            409,
            "busy",
            "a consultation is under way on this kiosk: its consent was checked at check-in",
            state=str(patient.state),
        )
    body: ConsentReadRequest = call.body
    # The clinic's refusal (a staff member's ID, a provider it does not know) is 422 (routing).
    reading = await patient.read_consent(
        patient_id=body.patient_id, provider_id=body.provider_id, appointment_id=body.appointment_id
    )
    return ConsentAnswer(
        patient_id=body.patient_id,
        provider_id=body.provider_id,
        granted=reading.granted,
        refusal=reading.refusal,
        expires_at=reading.expires_at,
    )


async def leave(call: Call) -> Accepted:
    patient = patient_of(call)
    session = patient.session
    if session is None:
        raise ApiError(409, "idle", "no consultation to leave: no patient is checked in", state="idle")
    await patient.leave()
    return Accepted(consultation=consultation_view(session))


ROUTES = [
    Route(
        "POST", "/v1/consent/read", read_consent,
        "What the clinic says of the patient's telehealth consent for a check-in (nothing published)",
        "patient", roles=PATIENT, body=ConsentReadRequest, answer=ConsentAnswer, conflicts=True,
        errors=(503,),
    ),
    Route(
        "POST", "/v1/check-in", check_in,
        "Check the patient in (consent is checked; 409 while a consultation runs)", "patient",
        roles=PATIENT, body=CheckInRequest, answer=CheckInAnswer, status=201, conflicts=True, errors=(503,),
    ),
    Route(
        "POST", "/v1/leave", leave, "The patient leaves: the consultation is cancelled (patient-left)",
        "patient", roles=PATIENT, answer=Accepted, conflicts=True, errors=(503,),
    ),
]  # fmt: skip
