"""The clinic stand-in's HTTP edge: device credential, input validation, TURN, on-call, upstream failure.

None of these need PubNub, so they run against a clinic whose relay is unreachable.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from telehealth_client.devstack.clinic import Clinic
from telehealth_client.devstack.turn import turn_rest_credentials

from .conftest import DEVICE_CREDENTIAL, TURN_SECRET, TURN_URLS, ClinicApi

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
    assert DEVICE_CREDENTIAL not in str(answer)


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
        (
            {"userId": "dr-lee", "role": "provider", "departmentId": "er"},
            "consultationChannel",
            "is required",
        ),
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
    status, answer = await http.at(offline_clinic).post("/api/telemedicine/token", body)
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
        Clinic("127.0.0.1:9", "p", "s", "k", "cred", "t", [], {"er": ["dr.x"]})


async def test_revoke_needs_the_caller_header(offline_clinic: Clinic, http: ClinicApi) -> None:
    body = {"userId": "pat-1", "consultationChannel": "consultation.dr-lee.pat-1"}
    status, answer = await http.at(offline_clinic).post("/api/telemedicine/revoke-access", body)
    assert status == 400
    assert answer["field"] == "X-User-Id"


async def test_revoke_refuses_a_caller_who_is_not_the_consultations_provider(
    offline_clinic: Clinic, http: ClinicApi
) -> None:
    body = {"userId": "pat-1", "consultationChannel": "consultation.dr-lee.pat-1"}
    for caller in ("pat-1", "dr-okafor", "dr-lee"):  # dr-lee was never granted a provider token here
        status, answer = await http.at(offline_clinic).post(
            "/api/telemedicine/revoke-access", body, caller=caller
        )
        assert status == 403, caller
        assert answer["field"] == "X-User-Id"


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
        "/api/telemedicine/revoke-access", body, caller="dr-lee"
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
    body = {"userId": "pat-1", "role": "patient", "providerId": "dr-lee"}
    status, answer = await http.at(offline_clinic).post("/api/telemedicine/token", body)
    assert status == 502
    assert answer["field"] == "upstream"
    assert "grant_token" in answer["reason"]
    assert offline_clinic.ledger.live_tokens("pat-1", "consultation.dr-lee.pat-1") == []
