"""The clinic stand-in's HTTP edge: device credential, input validation, TURN, on-call, upstream failure.

None of these need PubNub, so they run against a clinic whose relay is unreachable.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from telehealth_devstack.clinic import Clinic, DeviceIdentity, StaffMember
from telehealth_devstack.turn import turn_rest_credentials
from tests.support.clinic import (
    AUDITOR_CREDENTIAL,
    CART_CREDENTIALS,
    DEVICE_CREDENTIALS,
    KIOSK_CREDENTIAL,
    TURN_SECRET,
    TURN_URLS,
    ClinicApi,
    credential_for,
)

pytestmark = pytest.mark.integration

ENDPOINTS = [
    ("POST", "/api/telemedicine/token", {"userId": "pat-1", "role": "patient", "providerId": "dr-lee"}),
    ("POST", "/api/telemedicine/turn-credentials", {"userId": "pat-1"}),
    (
        "POST",
        "/api/telemedicine/revoke-access",
        {"userId": "pat-1", "consultationChannel": "consultation.a.b"},
    ),
    ("POST", "/api/telemedicine/consent", {"patientId": "pat-1", "granted": True, "expiresAt": None}),
    ("GET", "/api/on-call/cardiology", None),
    ("POST", "/api/audit-events", {}),
    ("GET", "/api/audit-events", None),
]


@pytest.mark.parametrize(("method", "path", "body"), ENDPOINTS)
@pytest.mark.parametrize(
    ("credential", "reason"),
    [(None, "is missing"), ("wrong-credential", "is not a valid device credential"), ("", "is not a valid")],
)
async def test_every_endpoint_needs_the_device_credential(
    offline_clinic: Clinic,
    http: ClinicApi,
    method: str,
    path: str,
    body: Any,
    credential: str | None,
    reason: str,
) -> None:
    status, answer = await http.at(offline_clinic).call(method, path, body, credential=credential)
    assert status == 401
    assert answer["field"] == "Authorization"
    assert answer["reason"].startswith(reason)
    assert not any(credential in str(answer) for credential in DEVICE_CREDENTIALS)


async def test_the_right_secret_in_another_scheme_is_refused(offline_clinic: Clinic, http: ClinicApi) -> None:
    status, answer = await http.at(offline_clinic).get("/api/on-call/er", scheme="Basic")
    assert (status, answer["field"]) == (401, "Authorization")
    assert await http.at(offline_clinic).get("/api/on-call/er", scheme="Bearer") == (
        200,
        {"providers": [{"id": "dr-nowak"}]},
    )


@pytest.mark.parametrize(
    ("body", "field", "reason_part"),
    [
        ({"userId": "pat.1", "role": "patient", "providerId": "dr-lee"}, "userId", "'.'"),
        ({"userId": "pat-*", "role": "patient", "providerId": "dr-lee"}, "userId", "'*'"),
        ({"userId": "pat-1", "role": "patient", "providerId": "dr.lee"}, "providerId", "'.'"),
        ({"userId": "pat-1", "role": "patient", "providerId": "*"}, "providerId", "'*'"),
        (
            {"userId": "nurse-1", "role": "nurse", "consultationChannel": "c.a.b", "departmentId": "e*"},
            "departmentId",
            "'*'",
        ),
        ({"userId": "pat-1", "role": "admin", "providerId": "dr-lee"}, "role", "'patient'"),
        ({"role": "patient", "providerId": "dr-lee"}, "userId", "is required"),
        ({"userId": "pat-1", "providerId": "dr-lee"}, "role", "is required"),
        ({"userId": 42, "role": "patient", "providerId": "dr-lee"}, "userId", "string"),
        ({"userId": "x" * 65, "role": "patient", "providerId": "dr-lee"}, "userId", "at most 64"),
        ({"userId": "", "role": "patient", "providerId": "dr-lee"}, "userId", "empty"),
        ({"userId": "pat-1", "role": "patient"}, "providerId", "is required"),
        ({"userId": "dr-lee", "role": "provider"}, "departmentId", "is required"),
        ({"userId": "nurse-1", "role": "nurse"}, "departmentId", "is required"),
        (
            {
                "userId": "dr-lee",
                "role": "provider",
                "consultationChannel": "consultation.dr-lee.p*",
                "departmentId": "er",
            },
            "consultationChannel",
            "'*'",
        ),
    ],
)
async def test_bad_token_requests_get_400_naming_the_field(
    offline_clinic: Clinic, http: ClinicApi, body: dict[str, Any], field: str, reason_part: str
) -> None:
    status, answer = await http.at(offline_clinic).post(
        "/api/telemedicine/token", body, credential=credential_for(body)
    )
    assert status == 400
    assert answer["field"] == field
    assert reason_part in answer["reason"]
    assert answer["error"].startswith(f"{field}: ")


@pytest.mark.parametrize("raw", [b"not json", b"[1, 2]", b'"text"', b"\xff\xfe"])
async def test_a_body_that_is_not_a_json_object_gets_400(
    offline_clinic: Clinic, http: ClinicApi, raw: bytes
) -> None:
    status, answer = await http.at(offline_clinic).post("/api/telemedicine/turn-credentials", raw=raw)
    assert status == 400
    assert answer["field"] == "body"


async def test_oversized_body_is_refused(offline_clinic: Clinic, http: ClinicApi) -> None:
    status, _ = await http.at(offline_clinic).post(
        "/api/telemedicine/turn-credentials", {"userId": "pat-1", "pad": "x" * 100_000}
    )
    assert status == 413


async def test_turn_credentials_follow_coturns_rest_scheme(offline_clinic: Clinic, http: ClinicApi) -> None:
    before = int(time.time())
    status, answer = await http.at(offline_clinic).post(
        "/api/telemedicine/turn-credentials", {"userId": "pat-1"}
    )
    assert status == 200
    assert answer["urls"] == TURN_URLS
    assert answer["ttlSeconds"] == 3600
    expiry = int(answer["username"].split(":")[0])
    assert before + 3600 <= expiry <= int(time.time()) + 3600
    assert answer["username"] == f"{expiry}:pat-1"
    assert (answer["username"], answer["credential"]) == turn_rest_credentials(
        TURN_SECRET, "pat-1", 3600, now=expiry - 3600
    )


async def test_turn_credentials_refuse_a_bad_user_id(offline_clinic: Clinic, http: ClinicApi) -> None:
    status, answer = await http.at(offline_clinic).post(
        "/api/telemedicine/turn-credentials", {"userId": "a:b"}
    )
    assert status == 400
    assert answer["field"] == "userId"


async def test_on_call_roster(offline_clinic: Clinic, http: ClinicApi) -> None:
    api = http.at(offline_clinic)
    assert await api.get("/api/on-call/cardiology") == (
        200,
        {"providers": [{"id": "dr-lee"}, {"id": "dr-okafor"}]},
    )
    assert await api.get("/api/on-call/radiology") == (200, {"providers": []})
    offline_clinic.set_on_call("radiology", ["dr-ito"])
    assert await api.get("/api/on-call/radiology") == (200, {"providers": [{"id": "dr-ito"}]})


@pytest.mark.parametrize("department", ["card.iology", "card*", "x" * 65])
async def test_on_call_refuses_a_bad_department_id(
    offline_clinic: Clinic, http: ClinicApi, department: str
) -> None:
    status, answer = await http.at(offline_clinic).get(f"/api/on-call/{department}")
    assert status == 400
    assert answer["field"] == "departmentId"


async def test_roster_with_a_bad_id_is_refused_at_construction() -> None:
    with pytest.raises(ValueError, match="on_call"):
        Clinic(
            "127.0.0.1:9",
            "p",
            "s",
            "k",
            {"cred": DeviceIdentity.patient_kiosk("kiosk-1")},
            "t",
            [],
            {"er": ["dr.x"]},
        )


@pytest.mark.parametrize(
    ("credentials", "message"),
    [
        ({}, "at least one"),
        ({"": DeviceIdentity.patient_kiosk("kiosk-1")}, "must not be empty"),
        # A staff credential whose user has no department (or another role) could never get a token.
        ({"c": DeviceIdentity("provider", "dr-x")}, "directory has no provider 'dr-x'"),
        ({"c": DeviceIdentity("provider", "nurse-1")}, "directory has no provider 'nurse-1'"),
        # A kiosk under a staff member's ID would act for that member as "its own device".
        ({"c": DeviceIdentity.patient_kiosk("nurse-1")}, "kiosk device ID 'nurse-1' is a staff member's"),
    ],
)
async def test_device_credentials_are_checked_at_construction(
    credentials: dict[str, DeviceIdentity], message: str
) -> None:
    directory = {"nurse-1": StaffMember("nurse", "cardiology")}
    with pytest.raises(ValueError, match=message):
        Clinic("127.0.0.1:9", "p", "s", "k", credentials, "t", [], {}, directory=directory)


@pytest.mark.parametrize(
    ("role", "user_id", "message"),
    [
        ("provider", None, "bound to one user ID"),
        ("nurse", None, "bound to one user ID"),
        ("provider", "dr.lee", "'.'"),
        ("provider", "dr-*", "'*'"),
        ("admin", "x", "role must be one of"),
        ("auditor", None, "bound to one user ID"),
        # A kiosk acts for patients and for its own device ID: it must have one.
        ("patient", None, "bound to its device ID"),
        ("patient", "kiosk.1", "'.'"),
    ],
)
def test_a_device_identity_is_bound_to_one_user_or_device(
    role: Any, user_id: str | None, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        DeviceIdentity(role, user_id)
    kiosk = DeviceIdentity.patient_kiosk("kiosk-1")
    assert (kiosk.role, kiosk.user_id, kiosk.device_id) == ("patient", "kiosk-1", "kiosk-1")
    assert DeviceIdentity("nurse", "nurse-1").device_id == "nurse-1"
    assert DeviceIdentity.auditor("auditor-1").device_id is None


DR_LEE_CONSULTATION = "consultation.dr-lee.pat-1"
PROVIDER_DR_LEE = {
    "userId": "dr-lee",
    "role": "provider",
    "consultationChannel": DR_LEE_CONSULTATION,
    "departmentId": "cardiology",
}
NURSE_1 = {
    "userId": "nurse-1",
    "role": "nurse",
    "consultationChannel": DR_LEE_CONSULTATION,
    "departmentId": "cardiology",
}
PATIENT_1 = {"userId": "pat-1", "role": "patient", "providerId": "dr-lee"}


async def refused_token_request(api: ClinicApi, credential: str, body: dict[str, Any]) -> Any:
    """A token request the clinic refuses (403): its answer. The clinic's PubNub is down, so a
    request that got past the check would answer 502 instead."""
    status, answer = await api.post("/api/telemedicine/token", body, credential=credential)
    assert status == 403, answer
    return answer


@pytest.mark.parametrize(
    ("credential", "body", "field", "reason_part"),
    [
        # A patient kiosk: patient tokens only.
        (KIOSK_CREDENTIAL, PROVIDER_DR_LEE, "role", "only request patient tokens"),
        (KIOSK_CREDENTIAL, NURSE_1, "role", "only request patient tokens"),
        # A provider's cart: its own provider tokens only.
        (CART_CREDENTIALS["dr-okafor"], PROVIDER_DR_LEE, "userId", "its own user"),
        (CART_CREDENTIALS["dr-lee"], PATIENT_1, "role", "only request provider tokens"),
        (CART_CREDENTIALS["dr-lee"], {**NURSE_1, "userId": "dr-lee"}, "role", "only request provider tokens"),
        # A nurse's cart: its own nurse tokens only.
        (CART_CREDENTIALS["nurse-1"], {**NURSE_1, "userId": "nurse-2"}, "userId", "its own user"),
        (CART_CREDENTIALS["nurse-1"], {**PROVIDER_DR_LEE, "userId": "nurse-1"}, "role", "nurse tokens"),
    ],
)
async def test_a_device_credential_mints_only_its_own_identitys_tokens(
    offline_clinic: Clinic,
    http: ClinicApi,
    credential: str,
    body: dict[str, Any],
    field: str,
    reason_part: str,
) -> None:
    answer = await refused_token_request(http.at(offline_clinic), credential, body)
    assert (answer["field"], answer["error"]) == (field, f"{field}: {answer['reason']}")
    assert reason_part in answer["reason"]
    assert not any(c in str(answer) for c in DEVICE_CREDENTIALS)


@pytest.mark.parametrize(
    ("credential", "body", "field"),
    [
        # Allowed; then the patient's consent (none recorded here) decides.
        (KIOSK_CREDENTIAL, PATIENT_1, "consent"),
        (KIOSK_CREDENTIAL, {**PATIENT_1, "userId": "pat-2"}, "consent"),  # a kiosk serves many patients
        # Allowed; then PubNub is down.
        (CART_CREDENTIALS["dr-lee"], PROVIDER_DR_LEE, "upstream"),
        (CART_CREDENTIALS["nurse-1"], NURSE_1, "upstream"),
    ],
)
async def test_a_device_credential_may_request_its_own_identitys_tokens(
    offline_clinic: Clinic, http: ClinicApi, credential: str, body: dict[str, Any], field: str
) -> None:
    api = http.at(offline_clinic)
    # A nurse's token naming a consultation needs its provider's assignment (no PubNub needed).
    assign = {"consultationChannel": DR_LEE_CONSULTATION, "nurseId": "nurse-1"}
    assert (await api.post("/api/telemedicine/assign", assign, credential=CART_CREDENTIALS["dr-lee"]))[
        0
    ] == 201
    status, answer = await api.post("/api/telemedicine/token", body, credential=credential)
    assert (status, answer["field"]) == ({"consent": 403, "upstream": 502}[field], field)


async def test_turn_credentials_only_for_users_the_device_acts_for(
    offline_clinic: Clinic, http: ClinicApi
) -> None:
    api = http.at(offline_clinic)
    path = "/api/telemedicine/turn-credentials"
    assert (await api.post(path, {"userId": "pat-7"}))[0] == 200
    assert (await api.post(path, {"userId": "dr-lee"}, credential=CART_CREDENTIALS["dr-lee"]))[0] == 200
    status, answer = await api.post(path, {"userId": "dr-okafor"}, credential=CART_CREDENTIALS["dr-lee"])
    assert (status, answer["field"]) == (403, "userId")


REVOKE_PAT_1 = {"userId": "pat-1", "consultationChannel": DR_LEE_CONSULTATION}


@pytest.mark.parametrize(
    ("credential", "caller", "field"),
    [
        (KIOSK_CREDENTIAL, None, "Authorization"),
        (CART_CREDENTIALS["nurse-1"], None, "Authorization"),
        (CART_CREDENTIALS["dr-okafor"], None, "consultationChannel"),
        # A header naming the consultation's provider proves nothing: the credential decides.
        (KIOSK_CREDENTIAL, "dr-lee", "X-User-Id"),
        (CART_CREDENTIALS["dr-okafor"], "dr-lee", "X-User-Id"),
        (CART_CREDENTIALS["dr-lee"], "dr-okafor", "X-User-Id"),
    ],
)
async def test_revoke_needs_the_consultations_providers_own_credential(
    offline_clinic: Clinic, http: ClinicApi, credential: str, caller: str | None, field: str
) -> None:
    status, answer = await http.at(offline_clinic).post(
        "/api/telemedicine/revoke-access", REVOKE_PAT_1, credential=credential, caller=caller
    )
    assert (status, answer["field"]) == (403, field)
    assert answer["reason"]


@pytest.mark.parametrize("caller", [None, "dr-lee"])
async def test_revoke_by_the_consultations_provider_is_allowed(
    offline_clinic: Clinic, http: ClinicApi, caller: str | None
) -> None:
    # Nothing was granted, so nothing is revoked (and PubNub, down here, is not called).
    answer = await http.at(offline_clinic).post(
        "/api/telemedicine/revoke-access", REVOKE_PAT_1, credential=CART_CREDENTIALS["dr-lee"], caller=caller
    )
    assert answer == (200, {"revoked": 0})


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"userId": "pat-1", "consultationChannel": "consultation.dr-lee"}, "consultationChannel"),
        ({"userId": "pat.1", "consultationChannel": "consultation.dr-lee.pat-1"}, "userId"),
        ({"consultationChannel": "consultation.dr-lee.pat-1"}, "userId"),
    ],
)
async def test_revoke_refuses_bad_bodies(
    offline_clinic: Clinic, http: ClinicApi, body: dict[str, Any], field: str
) -> None:
    status, answer = await http.at(offline_clinic).post(
        "/api/telemedicine/revoke-access", body, credential=CART_CREDENTIALS["dr-lee"]
    )
    assert status == 400
    assert answer["field"] == field


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"patientId": "pat*", "granted": True, "expiresAt": None}, "patientId"),
        ({"patientId": "pat-1", "granted": "yes", "expiresAt": None}, "granted"),
        ({"patientId": "pat-1", "granted": True, "expiresAt": "tomorrow"}, "expiresAt"),
        ({"patientId": "pat-1", "granted": True, "expiresAt": "2026-11-22T14:03:07+02:00"}, "expiresAt"),
        ({"patientId": "pat-1", "granted": True}, "expiresAt"),
    ],
)
async def test_consent_refuses_bad_bodies(
    offline_clinic: Clinic, http: ClinicApi, body: dict[str, Any], field: str
) -> None:
    status, answer = await http.at(offline_clinic).post("/api/telemedicine/consent", body)
    assert status == 400
    assert answer["field"] == field


async def test_pubnub_down_gives_502_without_leaking_the_token_request(
    offline_clinic: Clinic, http: ClinicApi
) -> None:
    status, answer = await http.at(offline_clinic).post(
        "/api/telemedicine/token", PROVIDER_DR_LEE, credential=CART_CREDENTIALS["dr-lee"]
    )
    assert status == 502
    assert answer["field"] == "upstream"
    assert "grant_token" in answer["reason"]
    assert offline_clinic.ledger.live_tokens("dr-lee", DR_LEE_CONSULTATION) == []


@pytest.mark.parametrize(
    ("credential", "body", "field", "reason_part"),
    [
        # dr-lee and nurse-1 are in cardiology: the emergency department's queue is not theirs.
        (CART_CREDENTIALS["dr-lee"], {**PROVIDER_DR_LEE, "departmentId": "er"}, "departmentId", "department"),
        (CART_CREDENTIALS["nurse-1"], {**NURSE_1, "departmentId": "er"}, "departmentId", "department"),
        # A nurse gets a consultation of a provider in its own department only.
        (
            CART_CREDENTIALS["nurse-1"],
            {**NURSE_1, "consultationChannel": "consultation.dr-okafor.pat-1"},
            "consultationChannel",
            "this nurse's department",
        ),
        (
            CART_CREDENTIALS["nurse-1"],
            {**NURSE_1, "consultationChannel": "consultation.dr-unknown.pat-1"},
            "consultationChannel",
            "this nurse's department",
        ),
        # An auditor's credential mints nothing.
        (AUDITOR_CREDENTIAL, {**PATIENT_1, "userId": "auditor-1"}, "Authorization", "audit sink"),
    ],
)
async def test_staff_get_only_their_own_departments_channels(
    offline_clinic: Clinic,
    http: ClinicApi,
    credential: str,
    body: dict[str, Any],
    field: str,
    reason_part: str,
) -> None:
    answer = await refused_token_request(http.at(offline_clinic), credential, body)
    assert answer["field"] == field
    assert reason_part in answer["reason"]


@pytest.mark.parametrize(
    "credential", [CART_CREDENTIALS["dr-lee"], CART_CREDENTIALS["nurse-1"], AUDITOR_CREDENTIAL]
)
async def test_only_the_kiosk_records_consent(
    offline_clinic: Clinic, http: ClinicApi, credential: str
) -> None:
    body = {"patientId": "pat-1", "granted": True, "expiresAt": None}
    status, answer = await http.at(offline_clinic).post(
        "/api/telemedicine/consent", body, credential=credential
    )
    assert (status, answer["field"]) == (403, "Authorization")
    assert "kiosk" in answer["reason"]
    assert await offline_clinic.consent("pat-1") is None
    # The kiosk's request gets past the check (and then finds PubNub down).
    status, answer = await http.at(offline_clinic).post("/api/telemedicine/consent", body)
    assert (status, answer["field"]) == (502, "upstream")
