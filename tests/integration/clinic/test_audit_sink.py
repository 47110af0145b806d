"""The audit sink: validated, stored once per id, append-only, durable across restarts."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from telehealth_devstack.clinic import Clinic
from tests.support.clinic import (
    AUDITOR_CREDENTIAL,
    CART_CREDENTIALS,
    KIOSK_CREDENTIAL,
    KIOSK_ID,
    ORGANIZATION,
    OTHER_KIOSK_CREDENTIAL,
    OTHER_KIOSK_ID,
    ClinicApi,
    ClinicFactory,
    audit_event,
)

pytestmark = pytest.mark.integration


async def test_an_event_is_stored_once_per_id(offline_clinic: Clinic, http: ClinicApi) -> None:
    api = http.at(offline_clinic)
    first, second = audit_event(), audit_event(eventType="CONSULTATION_SESSION_END")
    head = {"deviceId": KIOSK_ID, "highestSequence": 0}  # these events carry no sequence
    assert await api.post("/api/audit-events", first) == (201, {"id": first["id"], "stored": True, **head})
    assert await api.post("/api/audit-events", first) == (201, {"id": first["id"], "stored": False, **head})
    # The same id spelt in upper case is the same event.
    assert await api.post("/api/audit-events", {**first, "id": first["id"].upper()}) == (
        201,
        {"id": first["id"], "stored": False, **head},
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
        {"id": event["id"], "stored": False, "deviceId": KIOSK_ID, "highestSequence": 0},
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


# -- deviceId, sequence and the sink's acknowledgement (PROTOCOL.md, "Audit events") ---------------


def kiosk_sequence_event(sequence: int, **overrides: Any) -> dict[str, Any]:
    """An event of the kiosk's own device, numbered by its gapless counter."""
    return audit_event(**{"deviceId": KIOSK_ID, "sequence": sequence, **overrides})


async def test_the_answer_is_the_highest_sequence_held_with_no_gap_below(
    offline_clinic: Clinic, http: ClinicApi
) -> None:
    api = http.at(offline_clinic)

    async def post(sequence: int) -> int:
        status, answer = await api.post("/api/audit-events", kiosk_sequence_event(sequence))
        assert status == 201, answer
        assert answer["deviceId"] == KIOSK_ID
        return int(answer["highestSequence"])

    assert await post(1) == 1
    assert await post(2) == 2
    # 3 has not arrived: 4 and 5 are held, but the head stays below the gap.
    assert await post(4) == 2
    assert await post(5) == 2
    assert await api.get(f"/api/audit-events/head?deviceId={KIOSK_ID}") == (
        200,
        {"deviceId": KIOSK_ID, "highestSequence": 2},
    )
    # The gap closes: the head moves over everything held above it.
    assert await post(3) == 5
    assert await post(6) == 6


async def test_an_event_without_device_id_answers_for_the_credentials_own_device(
    offline_clinic: Clinic, http: ClinicApi
) -> None:
    api = http.at(offline_clinic)
    status, answer = await api.post("/api/audit-events", audit_event(sequence=1))
    assert (status, answer["deviceId"], answer["highestSequence"]) == (201, KIOSK_ID, 1)
    provider = audit_event(actor=PROVIDER_ACTOR)
    status, answer = await api.post("/api/audit-events", provider, credential=CART_CREDENTIALS["dr-lee"])
    assert (status, answer["deviceId"], answer["highestSequence"]) == (201, "dr-lee", 0)


@pytest.mark.parametrize(
    ("credential", "event"),
    [
        # The kiosk naming another kiosk, or a staff member's cart.
        (KIOSK_CREDENTIAL, kiosk_sequence_event(1, deviceId=OTHER_KIOSK_ID)),
        (KIOSK_CREDENTIAL, kiosk_sequence_event(1, deviceId="dr-lee")),
        # A provider's cart naming a kiosk or another cart.
        (CART_CREDENTIALS["dr-lee"], audit_event(actor=PROVIDER_ACTOR, deviceId=KIOSK_ID, sequence=1)),
        (CART_CREDENTIALS["dr-lee"], audit_event(actor=PROVIDER_ACTOR, deviceId="dr-okafor")),
    ],
)
async def test_an_event_of_another_device_gets_403_naming_device_id_and_is_not_stored(
    offline_clinic: Clinic, http: ClinicApi, credential: str, event: dict[str, Any]
) -> None:
    api = http.at(offline_clinic)
    status, answer = await api.post("/api/audit-events", event, credential=credential)
    assert (status, answer["field"]) == (403, "deviceId")
    assert await offline_clinic.audit_events() == []
    # Nothing was counted for the device named either.
    head = await api.get(
        f"/api/audit-events/head?deviceId={event['deviceId']}", credential=AUDITOR_CREDENTIAL
    )
    assert head == (200, {"deviceId": event["deviceId"], "highestSequence": 0})


async def test_a_sequence_reused_under_another_id_gets_409_and_a_repeat_is_stored_once(
    offline_clinic: Clinic, http: ClinicApi
) -> None:
    api = http.at(offline_clinic)
    first = kiosk_sequence_event(1)
    assert (await api.post("/api/audit-events", first))[1]["highestSequence"] == 1
    # The same event again (a retry after a lost answer): stored once, acknowledged again.
    assert await api.post("/api/audit-events", first) == (
        201,
        {"id": first["id"], "stored": False, "deviceId": KIOSK_ID, "highestSequence": 1},
    )
    # A device rolled back re-uses number 1 for another event: refused, not merged.
    status, answer = await api.post("/api/audit-events", kiosk_sequence_event(1))
    assert (status, answer["field"]) == (409, "sequence")
    assert await offline_clinic.audit_events() == [first]
    # Another device may use the same number: each device counts for itself.
    other = kiosk_sequence_event(1, deviceId=OTHER_KIOSK_ID)
    status, answer = await api.post("/api/audit-events", other, credential=OTHER_KIOSK_CREDENTIAL)
    assert (status, answer["deviceId"], answer["highestSequence"]) == (201, OTHER_KIOSK_ID, 1)


@pytest.mark.parametrize(
    ("event", "field"),
    [
        (kiosk_sequence_event(0), "sequence"),
        (kiosk_sequence_event(-3), "sequence"),
        (audit_event(deviceId=KIOSK_ID, sequence="1"), "sequence"),
        (audit_event(deviceId=KIOSK_ID, sequence=1.5), "sequence"),
        (audit_event(deviceId="kiosk.1", sequence=1), "deviceId"),
    ],
)
async def test_a_bad_device_id_or_sequence_gets_400_naming_it(
    offline_clinic: Clinic, http: ClinicApi, event: dict[str, Any], field: str
) -> None:
    status, answer = await http.at(offline_clinic).post("/api/audit-events", event)
    assert (status, answer["field"]) == (400, field)
    assert await offline_clinic.audit_events() == []


async def test_the_head_is_for_the_devices_own_credential_or_an_auditor(
    offline_clinic: Clinic, http: ClinicApi
) -> None:
    api = http.at(offline_clinic)
    for sequence in (1, 2):
        assert (await api.post("/api/audit-events", kiosk_sequence_event(sequence)))[0] == 201
    path = f"/api/audit-events/head?deviceId={KIOSK_ID}"
    expected = (200, {"deviceId": KIOSK_ID, "highestSequence": 2})
    assert await api.get(path, credential=KIOSK_CREDENTIAL) == expected
    assert await api.get(path, credential=AUDITOR_CREDENTIAL) == expected
    for credential in (OTHER_KIOSK_CREDENTIAL, CART_CREDENTIALS["dr-lee"], CART_CREDENTIALS["nurse-1"]):
        status, answer = await api.get(path, credential=credential)
        assert (status, answer["field"]) == (403, "deviceId")
        assert "highestSequence" not in answer
    # A device nothing was heard from: 0.
    assert await api.get("/api/audit-events/head?deviceId=dr-lee", credential=CART_CREDENTIALS["dr-lee"]) == (
        200,
        {"deviceId": "dr-lee", "highestSequence": 0},
    )
    for query, field in (("", "deviceId"), ("?deviceId=kiosk.1", "deviceId")):
        status, answer = await api.get(f"/api/audit-events/head{query}", credential=AUDITOR_CREDENTIAL)
        assert (status, answer["field"]) == (400, field)


async def test_sequences_and_heads_survive_a_clinic_restart(
    make_clinic: ClinicFactory, http: ClinicApi, tmp_path: Path
) -> None:
    state = tmp_path / "durable"
    first = await make_clinic(state_dir=state)
    for sequence in (1, 2, 4):
        assert (await http.at(first).post("/api/audit-events", kiosk_sequence_event(sequence)))[0] == 201
    await first.stop()

    second = http.at(await make_clinic(state_dir=state))
    assert await second.get(f"/api/audit-events/head?deviceId={KIOSK_ID}") == (
        200,
        {"deviceId": KIOSK_ID, "highestSequence": 2},
    )
    status, answer = await second.post("/api/audit-events", kiosk_sequence_event(2))
    assert (status, answer["field"]) == (409, "sequence")
    assert (await second.post("/api/audit-events", kiosk_sequence_event(3)))[1]["highestSequence"] == 4
