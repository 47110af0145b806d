"""The local API's refusals on real agents: no route but health without the token, JSON 401, 404,
405, 409 (with the state, or the role), 413 and 422 (naming each field), and nothing changed by a
refused request."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import aiohttp
import pytest

from telehealth_client.agent import Agent, StartError
from telehealth_client.api import ROUTES
from telehealth_client.api.models import MAX_BODY_BYTES
from telehealth_client.api.routing import Route
from telehealth_client.config import load_settings
from telehealth_client.pubsub.bus import ConnectionStatus
from telehealth_devstack.network import CuttableLink
from tests.support.api import CHECK_IN, CONSULTATION, PROVIDER, WAIT, Agents, RunningAgent
from tests.support.recorder import Recorder

pytestmark = pytest.mark.integration

PROTECTED = [route for route in ROUTES if not route.public]


def concrete(route: Route) -> str:
    return re.sub(r"{\w+}", lambda m: CONSULTATION if "consultation" in m.group(0) else "esc-1", route.path)


def assert_error(answer: object, code: str) -> dict[str, object]:
    assert isinstance(answer, dict), answer
    assert answer["error"] == code, answer
    assert isinstance(answer["message"], str) and answer["message"]
    assert isinstance(answer["fields"], list)
    return answer


@pytest.mark.parametrize("route", PROTECTED, ids=lambda r: f"{r.method} {r.path}")
async def test_no_route_but_health_answers_without_the_right_token(kiosk: RunningAgent, route: Route) -> None:
    for token in (None, "wrong-token", kiosk.api.token + "x", ""):
        status, answer = await kiosk.api.call(route.method, concrete(route), {}, token=token)
        assert status == 401, (token, answer)
        assert_error(answer, "unauthorized")
    # Another scheme carrying the right token is refused too.
    status, _ = await kiosk.api.call(
        route.method, concrete(route), {}, token=None, headers={"Authorization": f"Basic {kiosk.api.token}"}
    )
    assert status == 401


async def test_health_needs_no_token_and_an_idle_kiosk_is_healthy(kiosk: RunningAgent) -> None:
    assert await kiosk.api.get("/v1/health", token=None) == (
        200,
        {"ok": True, "pubsub": "idle", "reason": None},
    )
    status, ready = await kiosk.api.get("/v1/ready")
    assert (status, ready["ready"], ready["role"]) == (200, True, "patient")


async def test_unknown_routes_and_methods_answer_json(kiosk: RunningAgent) -> None:
    status, answer = await kiosk.api.get("/v1/nothing-here")
    assert status == 404
    assert_error(answer, "not-found")
    status, answer = await kiosk.api.call("DELETE", "/v1/status")
    assert status == 405
    assert_error(answer, "method-not-allowed")
    # Without the token an unknown route says nothing about what exists.
    assert (await kiosk.api.get("/v1/nothing-here", token=None))[0] == 401


async def test_a_bad_check_in_is_422_naming_each_field_and_changes_nothing(kiosk: RunningAgent) -> None:
    status, answer = await kiosk.api.post(
        "/v1/check-in", {"appointmentId": "appt 1", "providerId": PROVIDER, "departmentId": "er", "extra": 1}
    )
    assert status == 422
    fields = {
        problem["field"]: problem["reason"] for problem in assert_error(answer, "invalid-body")["fields"]
    }
    assert set(fields) == {"appointmentId", "patientId", "extra"}, fields
    for bad in (b"{not json", b"[1, 2]", b"\xff\xfe"):
        status, answer = await kiosk.api.post(
            "/v1/check-in", data=bad, headers={"Content-Type": "application/json"}
        )
        assert status == 422, bad
        assert assert_error(answer, "invalid-body")["fields"][0]["field"] == "body"
    status, state = await kiosk.api.get("/v1/status")
    assert (status, state["status"], state["consultations"]) == (200, "idle", [])


async def test_a_body_over_the_limit_is_413(kiosk: RunningAgent) -> None:
    big = b'{"text": "' + b"a" * (MAX_BODY_BYTES + 1) + b'"}'
    status, answer = await kiosk.api.post("/v1/chat", data=big, headers={"Content-Type": "application/json"})
    assert status == 413
    assert_error(answer, "body-too-large")


async def test_what_the_lifecycle_refuses_on_an_idle_kiosk_is_409_with_the_state(kiosk: RunningAgent) -> None:
    for method, path, body in (
        ("GET", "/v1/chat", None),
        ("POST", "/v1/chat", {"text": "hello"}),
        ("POST", "/v1/chat/read", {}),
        ("POST", "/v1/leave", None),
    ):
        status, answer = await kiosk.api.call(method, path, body)
        assert status == 409, (path, answer)
        assert answer["state"] == "idle", answer
    # A provider's route on a kiosk: 409 naming this agent's role (ending as a patient).
    status, answer = await kiosk.api.post(
        f"/v1/consultations/{CONSULTATION}/end", {"followUpRequired": False}
    )
    assert status == 409
    assert (assert_error(answer, "wrong-role")["role"], answer["state"]) == ("patient", "idle")


async def test_patient_routes_on_a_provider_cart_answer_409_naming_the_role(provider: RunningAgent) -> None:
    for path, body in (("/v1/check-in", CHECK_IN), ("/v1/leave", None), ("/v1/chat", {"text": "x"})):
        status, answer = await provider.api.post(path, body)
        assert status == 409, answer
        assert assert_error(answer, "wrong-role")["role"] == "provider"
    status, answer = await provider.api.post(f"/v1/consultations/{CONSULTATION}/join")
    assert status == 404
    assert_error(answer, "unknown-consultation")
    status, answer = await provider.api.post(
        f"/v1/consultations/{CONSULTATION}/end", {"followUpRequired": "yes"}
    )
    assert status == 422
    assert [f["field"] for f in answer["fields"]] == ["followUpRequired"]


async def test_health_of_a_connected_cart_and_its_status(provider: RunningAgent) -> None:
    status, health = await provider.api.get("/v1/health", token=None)
    assert (status, health["ok"], health["pubsub"]) == (200, True, "connected")
    status, state = await provider.api.get("/v1/status")
    assert status == 200
    assert (state["role"], state["userId"], state["pubsub"], state["consultations"]) == (
        "provider",
        PROVIDER,
        "connected",
        [],
    )
    assert state["eventsLastId"] is not None
    assert (await provider.api.get("/v1/waiting-room")) == (200, {"waiting": []})


async def test_without_a_token_the_agent_does_not_start_and_names_the_setting(agents: Agents) -> None:
    environment = agents.settings_for("kiosk-api")
    del environment["TELEHEALTH_API_TOKEN"]
    agent = Agent(load_settings(environ=environment), serve_api=True)
    try:
        with pytest.raises(StartError, match="api_token: not set; looked in TELEHEALTH_API_TOKEN"):
            await agent.start()
    finally:
        await agent.aclose()


async def test_the_api_serves_on_a_unix_socket(agents: Agents, tmp_path: Path) -> None:
    socket_path = tmp_path / "api.sock"
    running = await agents.start("kiosk-api", TELEHEALTH_API_SOCKET=str(socket_path))
    assert running.agent.api is not None and running.agent.api.address == f"unix:{socket_path}"
    assert socket_path.stat().st_mode & 0o777 == 0o600
    async with aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=str(socket_path))) as session:
        async with session.get("http://agent/v1/health") as response:
            assert (response.status, (await response.json())["pubsub"]) == (200, "idle")
        async with session.get("http://agent/v1/status") as response:
            assert response.status == 401


async def test_health_is_503_naming_the_reason_while_pubsub_is_down(agents: Agents) -> None:
    # A connected cart whose network to PubNub is then cut: it keeps reconnecting, and its health
    # (without the token) says why it is not healthy; back when the network is.
    async with CuttableLink(agents.stack.agent_environment()["TELEHEALTH_ORIGIN"]) as link:
        running = await agents.start(PROVIDER, TELEHEALTH_ORIGIN=link.origin)
        if not running.agent.connected.is_set():
            await asyncio.wait_for(running.agent.connected.wait(), WAIT)
        assert (await running.api.get("/v1/health", token=None))[0] == 200
        changes = Recorder()
        assert running.agent.bus is not None
        running.agent.bus.add_status_listener(changes)
        link.cut()
        await changes.wait_for(lambda change: change.status is not ConnectionStatus.CONNECTED, within=WAIT)
        status, health = await running.api.get("/v1/health", token=None)
        assert status == 503, health
        assert health["ok"] is False and health["pubsub"] in ("reconnecting", "connecting")
        assert health["reason"] == f"pub/sub is {health['pubsub']}"
        link.restore()
        await asyncio.wait_for(running.agent.connected.wait(), WAIT)
        assert (await running.api.get("/v1/health", token=None))[0] == 200
