"""The audit sink: validated, stored once per id, append-only, durable across restarts."""

from __future__ import annotations

import sqlite3
import uuid
from pathlib import Path
from typing import Any

import pytest

from telehealth_client.devstack.clinic import Clinic

from .conftest import (
    AUDITOR_CREDENTIAL,
    CART_CREDENTIALS,
    KIOSK_CREDENTIAL,
    ORGANIZATION,
    ClinicApi,
    ClinicFactory,
)

pytestmark = pytest.mark.integration


def audit_event(**overrides: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "id": str(uuid.uuid4()),
        "timestamp": "2026-11-22T14:03:07.123Z",
        "eventType": "CONSULTATION_SESSION_START",
        "severity": "info",
        "organizationId": ORGANIZATION,  # the one organization the clinic serves
        "actor": {"userId": "pat-1", "role": "patient", "ipAddress": "10.0.0.7"},
        "resource": {
            "type": "consultation",
            "id": "consultation.dr-lee.pat-1",
            "channel": "consultation.dr-lee.pat-1",
        },
        "action": "join",
        "outcome": "success",
        "metadata": {"sessionId": "s-1", "consentRef": "c-1"},
    }
    event.update(overrides)
    return event


async def test_an_event_is_stored_once_per_id(offline_clinic: Clinic, http: ClinicApi) -> None:
    api = http.at(offline_clinic)
    first, second = audit_event(), audit_event(eventType="CONSULTATION_SESSION_END")
    assert await api.post("/api/audit-events", first) == (201, {"id": first["id"], "stored": True})
    assert await api.post("/api/audit-events", first) == (201, {"id": first["id"], "stored": False})
    # The same id spelt in upper case is the same event.
    assert await api.post("/api/audit-events", {**first, "id": first["id"].upper()}) == (
        201,
        {"id": first["id"], "stored": False},
    )
    assert (await api.post("/api/audit-events", second))[0] == 201
    assert await offline_clinic.audit_events() == [first, second]
    assert await api.get("/api/audit-events", credential=AUDITOR_CREDENTIAL) == (
        200,
        {"events": [first, second]},
    )


async def test_a_repeat_with_different_content_does_not_overwrite(
    offline_clinic: Clinic, http: ClinicApi
) -> None:
    api = http.at(offline_clinic)
    original = audit_event()
    await api.post("/api/audit-events", original)
    status, answer = await api.post("/api/audit-events", {**original, "outcome": "failure"})
    assert (status, answer["stored"]) == (201, False)
    assert await offline_clinic.audit_events() == [original]


async def test_events_survive_a_clinic_restart(
    make_clinic: ClinicFactory, http: ClinicApi, tmp_path: Path
) -> None:
    state = tmp_path / "durable"
    event = audit_event()
    first = await make_clinic(state_dir=state)
    assert (await http.at(first).post("/api/audit-events", event))[0] == 201
    await first.stop()

    second = await make_clinic(state_dir=state)
    assert await second.audit_events() == [event]
    assert await http.at(second).post("/api/audit-events", event) == (
        201,
        {"id": event["id"], "stored": False},
    )
    assert await second.audit_events() == [event]


async def test_the_table_refuses_update_and_delete(
    offline_clinic: Clinic, http: ClinicApi, tmp_path: Path
) -> None:
    await http.at(offline_clinic).post("/api/audit-events", audit_event())
    with sqlite3.connect(tmp_path / "clinic" / "audit.sqlite3") as db:
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            db.execute("UPDATE audit_events SET event = '{}'")
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            db.execute("DELETE FROM audit_events")
        assert db.execute("SELECT count(*) FROM audit_events").fetchone() == (1,)


async def test_the_http_api_has_no_way_to_change_an_event(offline_clinic: Clinic, http: ClinicApi) -> None:
    event = audit_event()
    api = http.at(offline_clinic)
    await api.post("/api/audit-events", event)
    for method in ("PUT", "PATCH", "DELETE"):
        status, _ = await api.call(method, "/api/audit-events", event)
        assert status == 405, method
        status, _ = await api.call(method, f"/api/audit-events/{event['id']}")
        assert status == 404, method
    assert await offline_clinic.audit_events() == [event]


async def test_an_in_memory_sink_works_without_a_file(make_clinic: ClinicFactory, http: ClinicApi) -> None:
    clinic = await make_clinic(state_dir=None)
    event = audit_event()
    assert (await http.at(clinic).post("/api/audit-events", event))[0] == 201
    assert await clinic.audit_events() == [event]


def _without(key: str) -> dict[str, Any]:
    event = audit_event()
    del event[key]
    return event


@pytest.mark.parametrize(
    ("event", "field"),
    [
        (_without("id"), "id"),
        (_without("eventType"), "eventType"),
        (_without("actor"), "actor"),
        (_without("metadata"), "metadata"),
        (audit_event(id="not-a-uuid"), "id"),
        (audit_event(id="6fa459ea-ee8a-3ca4-894e-db77e160355e"), "id"),  # version 3
        (audit_event(timestamp="2026-11-22 14:03"), "timestamp"),
        (audit_event(timestamp="2026-11-22T14:03:07+01:00"), "timestamp"),
        (audit_event(timestamp="yesterday"), "timestamp"),
        (audit_event(eventType="CHAT_TEXT"), "eventType"),
        (audit_event(severity="debug"), "severity"),
        (audit_event(outcome="maybe"), "outcome"),
        (audit_event(organizationId="org.1"), "organizationId"),
        (audit_event(organizationId="org*"), "organizationId"),
        (audit_event(actor={"userId": "pat.1", "role": "patient"}), "actor.userId"),
        (audit_event(actor={"userId": "pat-1", "role": "admin"}), "actor.role"),
        (
            audit_event(actor={"userId": "pat-1", "role": "patient", "ipAddress": "999.1.1.1"}),
            "actor.ipAddress",
        ),
        (audit_event(resource={"id": "x"}), "resource.type"),
        (audit_event(resource={"type": "t", "id": "x", "channel": "a b"}), "resource.channel"),
        (audit_event(metadata="none"), "metadata"),
    ],
)
async def test_malformed_events_get_400_naming_the_field_and_are_not_stored(
    offline_clinic: Clinic, http: ClinicApi, event: dict[str, Any], field: str
) -> None:
    status, answer = await http.at(offline_clinic).post("/api/audit-events", event)
    assert status == 400
    assert answer["field"] == field
    assert await offline_clinic.audit_events() == []


@pytest.mark.parametrize(
    "credential", [KIOSK_CREDENTIAL, CART_CREDENTIALS["dr-lee"], CART_CREDENTIALS["nurse-1"]]
)
async def test_only_an_auditor_reads_the_sink(
    offline_clinic: Clinic, http: ClinicApi, credential: str
) -> None:
    api = http.at(offline_clinic)
    event = audit_event()
    await api.post("/api/audit-events", event)
    status, answer = await api.get("/api/audit-events", credential=credential)
    assert (status, answer["field"]) == (403, "Authorization")
    assert "auditor" in answer["reason"]
    assert "events" not in answer
    assert await api.get("/api/audit-events", credential=AUDITOR_CREDENTIAL) == (200, {"events": [event]})


PROVIDER_ACTOR = {"userId": "dr-lee", "role": "provider"}


@pytest.mark.parametrize(
    ("credential", "actor", "field"),
    [
        # A provider's cart posting as another provider, or as a patient.
        (CART_CREDENTIALS["dr-okafor"], PROVIDER_ACTOR, "actor.userId"),
        (CART_CREDENTIALS["dr-lee"], {"userId": "pat-1", "role": "patient"}, "actor.role"),
        # A nurse's cart posting as a provider; the kiosk posting as staff.
        (CART_CREDENTIALS["nurse-1"], {"userId": "nurse-1", "role": "provider"}, "actor.role"),
        (KIOSK_CREDENTIAL, PROVIDER_ACTOR, "actor.role"),
        # An auditor reads; it writes nothing.
        (AUDITOR_CREDENTIAL, {"userId": "auditor-1", "role": "patient"}, "Authorization"),
    ],
)
async def test_an_events_actor_must_be_the_posting_credentials_identity(
    offline_clinic: Clinic, http: ClinicApi, credential: str, actor: dict[str, str], field: str
) -> None:
    status, answer = await http.at(offline_clinic).post(
        "/api/audit-events", audit_event(actor=actor), credential=credential
    )
    assert (status, answer["field"]) == (403, field)
    assert await offline_clinic.audit_events() == []


@pytest.mark.parametrize(
    ("credential", "actor"),
    [
        (CART_CREDENTIALS["dr-lee"], PROVIDER_ACTOR),
        (CART_CREDENTIALS["nurse-1"], {"userId": "nurse-1", "role": "nurse"}),
        # The kiosk acts as whichever patient it serves (and as a patient under its own device ID).
        (KIOSK_CREDENTIAL, {"userId": "pat-7", "role": "patient"}),
        (KIOSK_CREDENTIAL, {"userId": "kiosk-1", "role": "patient"}),
    ],
)
async def test_an_event_posted_as_the_credentials_own_identity_is_stored(
    offline_clinic: Clinic, http: ClinicApi, credential: str, actor: dict[str, str]
) -> None:
    event = audit_event(actor=actor)
    status, _ = await http.at(offline_clinic).post("/api/audit-events", event, credential=credential)
    assert status == 201
    assert await offline_clinic.audit_events() == [event]


@pytest.mark.parametrize(
    ("credential", "actor"),
    [
        (KIOSK_CREDENTIAL, {"userId": "pat-1", "role": "patient"}),
        (CART_CREDENTIALS["dr-lee"], PROVIDER_ACTOR),
    ],
)
async def test_an_event_for_another_organization_gets_403_naming_it_and_is_not_stored(
    offline_clinic: Clinic, http: ClinicApi, credential: str, actor: dict[str, str]
) -> None:
    # The sink is this one organization's: another's events would mix into its audit trail.
    event = audit_event(organizationId="org-other", actor=actor)
    status, answer = await http.at(offline_clinic).post("/api/audit-events", event, credential=credential)
    assert (status, answer["field"]) == (403, "organizationId")
    assert ORGANIZATION in answer["reason"]
    assert await offline_clinic.audit_events() == []
