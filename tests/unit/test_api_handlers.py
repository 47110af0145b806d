"""The API's handlers through aiohttp's test client, on a real (idle, unstarted) kiosk agent: what
needs no development stack. The routes on running agents are in tests/integration/api/."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from telehealth_client.agent import Agent
from telehealth_client.api import ROUTES, build_app
from telehealth_client.api.events_stream import EventRing
from telehealth_client.api.models import MAX_BODY_BYTES
from telehealth_client.api.openapi import openapi_document
from telehealth_client.config import load_settings

TOKEN = "handler-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[TestClient[object, object]]:
    settings = load_settings(
        environ={
            "TELEHEALTH_USER_ID": "kiosk-1",
            "TELEHEALTH_STATE_DIR": str(tmp_path),
            "TELEHEALTH_MEDIA": "false",
        }
    )
    agent = Agent(settings)
    ring = EventRing(agent.hub)
    async with TestClient(TestServer(build_app(agent, TOKEN, ring))) as test_client:
        yield test_client
    await ring.aclose()


async def test_health_is_open_and_an_idle_kiosk_is_healthy(client: TestClient[object, object]) -> None:
    response = await client.get("/v1/health")
    assert (response.status, await response.json()) == (200, {"ok": True, "pubsub": "idle", "reason": None})


async def test_a_wrong_token_is_401_json_with_the_scheme_named(client: TestClient[object, object]) -> None:
    response = await client.get("/v1/status", headers={"Authorization": "Bearer nope"})
    assert response.status == 401
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert (await response.json())["error"] == "unauthorized"


async def test_the_openapi_document_is_served(client: TestClient[object, object]) -> None:
    response = await client.get("/v1/openapi.json", headers=AUTH)
    assert (response.status, await response.json()) == (200, openapi_document(ROUTES))


async def test_422_names_every_failing_field(client: TestClient[object, object]) -> None:
    response = await client.post(
        "/v1/check-in", json={"patientId": "", "providerId": 7, "departmentId": "er"}, headers=AUTH
    )
    assert response.status == 422
    body = await response.json()
    assert body["error"] == "invalid-body"
    assert {f["field"] for f in body["fields"]} == {"appointmentId", "patientId", "providerId"}


async def test_413_and_404_and_405_are_json(client: TestClient[object, object]) -> None:
    big = await client.post("/v1/chat", data=b"x" * (MAX_BODY_BYTES + 1), headers=AUTH)
    assert (big.status, (await big.json())["error"]) == (413, "body-too-large")
    missing = await client.get("/v1/nowhere", headers=AUTH)
    assert (missing.status, (await missing.json())["error"]) == (404, "not-found")
    wrong = await client.put("/v1/check-in", headers=AUTH)
    assert (wrong.status, (await wrong.json())["error"]) == (405, "method-not-allowed")
    assert "POST" in wrong.headers["Allow"]


async def test_a_kiosk_before_start_refuses_lifecycle_routes_with_409(
    client: TestClient[object, object],
) -> None:
    response = await client.post("/v1/leave", headers=AUTH)
    body = await response.json()
    assert (response.status, body["error"], body["state"]) == (409, "not-started", "none")


async def test_metrics_are_prometheus_text_behind_the_token(client: TestClient[object, object]) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    assert (await client.get("/metrics")).status == 401
    response = await client.get("/metrics", headers=AUTH)
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/plain; version=")
    families = {family.name for family in text_string_to_metric_families(await response.text())}
    assert {"telehealth_calls", "telehealth_pubsub_status", "telehealth_device_checks"} <= families


async def test_device_routes_answer_json_refusals_on_an_unstarted_kiosk(
    client: TestClient[object, object],
) -> None:
    response = await client.get("/v1/device-checks/devchk-0", headers=AUTH)
    assert (response.status, (await response.json())["error"]) == (404, "unknown-check")
    response = await client.post("/v1/device-checks", json={"skip": ["camera", "lens"]}, headers=AUTH)
    assert response.status == 422
    assert [problem["field"] for problem in (await response.json())["fields"]] == ["skip.1"]
