"""Emergencies through a provider cart's API: escalate (durable once answered), list the open ones,
resolve; refusals name the field, and a kiosk has no such routes."""

from __future__ import annotations

import pytest

from telehealth_client import events
from tests.support.api import CONSULTATION, PROVIDER, RunningAgent

pytestmark = pytest.mark.integration


async def test_escalate_list_and_resolve_through_the_api(provider: RunningAgent) -> None:
    assert (await provider.api.get("/v1/emergencies")) == (200, {"escalations": []})
    status, answer = await provider.api.post(
        "/v1/emergencies", {"consultationId": CONSULTATION, "severity": "critical", "reason": "chest pain"}
    )
    assert status == 201, answer
    escalation = answer["escalation"]
    assert (escalation["consultationId"], escalation["escalatedBy"], escalation["status"]) == (
        CONSULTATION,
        PROVIDER,
        "active",
    )
    await provider.wait_event(
        lambda e: (
            isinstance(e, events.EmergencyUpdated) and e.escalation_id == escalation["id"] and e.delivered
        )
    )
    status, listed = await provider.api.get("/v1/emergencies")
    assert [e["id"] for e in listed["escalations"]] == [escalation["id"]]

    status, answer = await provider.api.post(
        f"/v1/emergencies/{escalation['id']}/resolve", {"resolution": "stable"}
    )
    assert (status, answer["escalation"]["status"], answer["escalation"]["resolvedBy"]) == (
        200,
        "resolved",
        PROVIDER,
    )
    assert (await provider.api.get("/v1/emergencies")) == (200, {"escalations": []})
    status, answer = await provider.api.post(
        f"/v1/emergencies/{escalation['id']}/resolve", {"resolution": "again"}
    )
    assert (status, answer["error"]) == (404, "unknown-escalation")


async def test_bad_escalations_name_the_field_and_change_nothing(provider: RunningAgent) -> None:
    for body, field in (
        ({"consultationId": CONSULTATION, "severity": "mild", "reason": "x"}, "severity"),
        ({"consultationId": CONSULTATION, "severity": "urgent", "reason": ""}, "reason"),
        ({"consultationId": "not a channel", "severity": "urgent", "reason": "x"}, "consultationId"),
    ):
        status, answer = await provider.api.post("/v1/emergencies", body)
        assert status == 422, answer
        assert [f["field"] for f in answer["fields"]] == [field]
    assert (await provider.api.get("/v1/emergencies")) == (200, {"escalations": []})


async def test_a_kiosk_has_no_emergency_routes(kiosk: RunningAgent) -> None:
    status, answer = await kiosk.api.get("/v1/emergencies")
    assert (status, answer["error"], answer["role"]) == (409, "wrong-role", "patient")
