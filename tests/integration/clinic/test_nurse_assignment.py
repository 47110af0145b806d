"""Nurses by assignment, and access that ends with the consultation (issue 20, findings 2 and 3).

A nurse's token names a consultation only while the clinic records it as assigned to that nurse
(``POST /api/telemedicine/assign`` by the consultation's provider); revoke-access ends the
assignment as it ends an invitation, also after the consultation ended. Real clinic over HTTP,
real PubNub SDK against the enforcing relay.
"""

from __future__ import annotations

from typing import Any

import pytest

from telehealth_devstack.clinic import Clinic, StaffMember
from telehealth_devstack.relay import Relay
from tests.support.clinic import (
    AUDITOR_CREDENTIAL,
    CART_CREDENTIALS,
    DIRECTORY,
    KIOSK_CREDENTIAL,
    ClientFactory,
    ClinicApi,
    ClinicFactory,
    publish,
    read_history,
)

pytestmark = pytest.mark.integration

CONSULTATION = "consultation.dr-lee.pat-1"
ASSIGN = {"consultationChannel": CONSULTATION, "nurseId": "nurse-1"}
NURSE_TOKEN = {
    "userId": "nurse-1",
    "role": "nurse",
    "departmentId": "cardiology",
    "consultationChannel": CONSULTATION,
}
INVITE = {"consultationChannel": CONSULTATION, "invitedProviderId": "dr-okafor", "role": "specialist"}
SPECIALIST_TOKEN = {
    "userId": "dr-okafor",
    "role": "provider",
    "departmentId": "er",
    "consultationChannel": CONSULTATION,
}
DR_LEE = CART_CREDENTIALS["dr-lee"]


async def nurse_token(api: ClinicApi) -> tuple[int, Any]:
    return await api.post("/api/telemedicine/token", NURSE_TOKEN, credential=CART_CREDENTIALS["nurse-1"])


async def revoke(api: ClinicApi, user_id: str) -> tuple[int, Any]:
    body = {"userId": user_id, "consultationChannel": CONSULTATION}
    return await api.post("/api/telemedicine/revoke-access", body, credential=DR_LEE)


async def test_a_nurse_reaches_a_consultation_only_while_assigned_to_it(
    enforcing_relay: Relay, clinic: Clinic, http: ClinicApi, make_client: ClientFactory
) -> None:
    api = http.at(clinic)
    # A consultation of a provider in its department, but not assigned: refused, nothing granted.
    status, answer = await nurse_token(api)
    assert (status, answer["field"]) == (403, "consultationChannel")
    assert "assigned" in answer["reason"]
    assert clinic.ledger.live_tokens("nurse-1", CONSULTATION) == []

    assert await api.post("/api/telemedicine/assign", ASSIGN, credential=DR_LEE) == (
        201,
        {"consultationChannel": CONSULTATION, "nurseId": "nurse-1", "assignedBy": "dr-lee"},
    )
    assert await clinic.assignment_stands(CONSULTATION, "nurse-1")
    status, granted = await nurse_token(api)
    assert status == 200, granted
    nurse = make_client("nurse-1", token=granted["token"])
    assert await publish(nurse, CONSULTATION) == 200
    assert await read_history(nurse, CONSULTATION) == 200
    # Only that consultation: another of the same provider stays shut.
    assert await publish(nurse, "consultation.dr-lee.pat-2") == 403
    status, answer = await api.post(
        "/api/telemedicine/token",
        {**NURSE_TOKEN, "consultationChannel": "consultation.dr-lee.pat-2"},
        credential=CART_CREDENTIALS["nurse-1"],
    )
    assert (status, answer["field"]) == (403, "consultationChannel")

    # Revoked: its token stops working, the assignment ends, and no new token is issued.
    assert await revoke(api, "nurse-1") == (200, {"revoked": 1})
    assert await publish(nurse, CONSULTATION) == 403
    assert await read_history(nurse, CONSULTATION) == 403
    assert not await clinic.assignment_stands(CONSULTATION, "nurse-1")
    status, answer = await nurse_token(api)
    assert (status, answer["field"]) == (403, "consultationChannel")


async def test_after_the_consultation_ended_every_guests_access_ends_with_the_revocations(
    enforcing_relay: Relay, clinic: Clinic, http: ClinicApi, make_client: ClientFactory
) -> None:
    # The provider ends the consultation, then revokes each invited provider and assigned nurse
    # (PROTOCOL: every invitation ends with the consultation). The clinic keeps no consultation
    # state: revoke-access works the same after the end.
    api = http.at(clinic)
    assert (await api.post("/api/telemedicine/invite", INVITE, credential=DR_LEE))[0] == 201
    assert (await api.post("/api/telemedicine/assign", ASSIGN, credential=DR_LEE))[0] == 201
    status, specialist_grant = await api.post(
        "/api/telemedicine/token", SPECIALIST_TOKEN, credential=CART_CREDENTIALS["dr-okafor"]
    )
    assert status == 200
    status, nurse_grant = await nurse_token(api)
    assert status == 200
    specialist = make_client("dr-okafor", token=specialist_grant["token"])
    nurse = make_client("nurse-1", token=nurse_grant["token"])
    status, provider_grant = await api.post(
        "/api/telemedicine/token",
        {"userId": "dr-lee", "role": "provider", "departmentId": "cardiology"},
        credential=DR_LEE,
    )
    assert status == 200
    provider = make_client("dr-lee", token=provider_grant["token"])
    ended = {"type": "CONSULTATION_ENDED", "endedBy": "dr-lee", "timestamp": "2026-11-22T14:30:00.000Z"}
    assert not (await provider.publish().channel(CONSULTATION).message(ended).future()).status.is_error()

    assert await revoke(api, "dr-okafor") == (200, {"revoked": 1})
    assert await revoke(api, "nurse-1") == (200, {"revoked": 1})
    for guest, token_request, credential in (
        (specialist, SPECIALIST_TOKEN, CART_CREDENTIALS["dr-okafor"]),
        (nurse, NURSE_TOKEN, CART_CREDENTIALS["nurse-1"]),
    ):
        # The channel is reused by this pair's next consultation: no history, no new token.
        assert await read_history(guest, CONSULTATION) == 403
        status, answer = await api.post("/api/telemedicine/token", token_request, credential=credential)
        assert (status, answer["field"]) == (403, "consultationChannel")
    assert not await clinic.invitation_stands(CONSULTATION, "dr-okafor")
    assert not await clinic.assignment_stands(CONSULTATION, "nurse-1")
    # Revoking again (a provider endpoint retrying after a lost answer) is harmless.
    assert await revoke(api, "nurse-1") == (200, {"revoked": 0})


@pytest.mark.parametrize(
    ("credential", "field"),
    [
        (CART_CREDENTIALS["dr-okafor"], "consultationChannel"),  # a provider, not this consultation's
        (CART_CREDENTIALS["nurse-1"], "Authorization"),  # a nurse cannot assign itself
        (KIOSK_CREDENTIAL, "Authorization"),
        (AUDITOR_CREDENTIAL, "Authorization"),
    ],
)
async def test_only_the_consultations_provider_may_assign(
    offline_clinic: Clinic, http: ClinicApi, credential: str, field: str
) -> None:
    status, answer = await http.at(offline_clinic).post(
        "/api/telemedicine/assign", ASSIGN, credential=credential
    )
    assert (status, answer["field"]) == (403, field)
    assert not await offline_clinic.assignment_stands(CONSULTATION, "nurse-1")


@pytest.mark.parametrize(
    ("body", "status", "field", "reason_part"),
    [
        ({**ASSIGN, "nurseId": "dr-okafor"}, 400, "nurseId", "not a nurse"),
        ({**ASSIGN, "nurseId": "nurse-unknown"}, 400, "nurseId", "not a nurse"),
        ({**ASSIGN, "nurseId": "nurse.1"}, 400, "nurseId", "'.'"),
        ({"nurseId": "nurse-1"}, 400, "consultationChannel", "is required"),
        ({"consultationChannel": CONSULTATION}, 400, "nurseId", "is required"),
        (
            {**ASSIGN, "consultationChannel": "consultation.dr-lee"},
            400,
            "consultationChannel",
            "consultation.",
        ),
        # An emergency-department nurse for a cardiology provider's consultation.
        ({**ASSIGN, "nurseId": "nurse-er"}, 403, "nurseId", "department"),
    ],
)
async def test_a_bad_assignment_is_refused_naming_the_field_and_changes_nothing(
    make_clinic: ClinicFactory,
    http: ClinicApi,
    body: dict[str, Any],
    status: int,
    field: str,
    reason_part: str,
) -> None:
    clinic = await make_clinic(directory={**DIRECTORY, "nurse-er": StaffMember("nurse", "er")})
    answered, answer = await http.at(clinic).post("/api/telemedicine/assign", body, credential=DR_LEE)
    assert (answered, answer["field"]) == (status, field)
    assert reason_part in answer["reason"]
    for nurse in ("nurse-1", "nurse-er", "dr-okafor"):
        assert not await clinic.assignment_stands(CONSULTATION, nurse)


async def test_an_assignment_survives_a_clinic_restart_and_its_end_too(
    enforcing_relay: Relay, make_clinic: ClinicFactory, http: ClinicApi
) -> None:
    first = await make_clinic(relay_origin=enforcing_relay.origin)
    assert (await http.at(first).post("/api/telemedicine/assign", ASSIGN, credential=DR_LEE))[0] == 201
    await first.stop()

    second = await make_clinic(relay_origin=enforcing_relay.origin)  # the same state directory
    assert (await nurse_token(http.at(second)))[0] == 200
    assert await revoke(http.at(second), "nurse-1") == (200, {"revoked": 1})
    await second.stop()

    third = await make_clinic(relay_origin=enforcing_relay.origin)
    assert (await nurse_token(http.at(third)))[0] == 403
