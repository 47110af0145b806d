"""Small things on a real agent's API: health answers HEAD without the token, aiohttp's own refusals
come in the JSON error form, a made-up ``Last-Event-ID`` first gets a ``missed`` event, and the
emergency texts' documented bound is the one enforced."""

from __future__ import annotations

import json

import aiohttp
import pytest

from telehealth_client.emergency.desk import MAX_TEXT_CHARS
from tests.support.api import WAIT, RunningAgent
from tests.support.raw_http import raw_exchange

pytestmark = pytest.mark.integration


async def test_health_answers_head_without_the_token(kiosk: RunningAgent) -> None:
    async with kiosk.api.session.head(kiosk.api.base + "/v1/health") as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("application/json")
    async with kiosk.api.session.head(kiosk.api.base + "/v1/status") as response:
        assert response.status == 401  # every other route still needs the token


@pytest.mark.parametrize(
    ("request_line", "status"),
    [
        (b"GET * HTTP/1.1", 400),
        (b"GET /v1/nothing-here HTTP/1.1", 404),
        (b"PUT /v1/status HTTP/1.1", 405),
        (b"GET /v1/%zz HTTP/1.1", 404),
        (b"GET /v1/status/ HTTP/1.1", 404),
    ],
)
async def test_aiohttp_refusals_are_json(kiosk: RunningAgent, request_line: bytes, status: int) -> None:
    host, _, port = kiosk.api.base.removeprefix("http://").rpartition(":")
    request = request_line + b"\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer "
    answered, headers, body = await raw_exchange(
        host, int(port), request + kiosk.api.token.encode() + b"\r\n\r\n"
    )
    assert answered == status, body
    assert headers["content-type"].startswith("application/json"), headers
    assert set(json.loads(body)) >= {"error", "message", "fields"}


async def test_a_made_up_last_event_id_first_gets_a_missed_event(kiosk: RunningAgent) -> None:
    headers = {**kiosk.api.headers(), "Last-Event-ID": "not-a-number"}
    async with kiosk.api.session.get(
        kiosk.api.base + "/v1/events", headers=headers, timeout=aiohttp.ClientTimeout(sock_read=WAIT)
    ) as response:
        assert response.status == 200
        frame: list[str] = []
        while not frame or frame[-1] != "":
            frame.append((await response.content.readline()).decode().rstrip("\n"))
    assert frame[0] == "event: missed", frame
    assert json.loads(frame[1].removeprefix("data: "))["reason"] == "unknown-id"


async def test_the_emergency_texts_bound_is_the_documented_one(kiosk: RunningAgent) -> None:
    status, document = await kiosk.api.get("/v1/openapi.json")
    assert status == 200
    schemas = document["components"]["schemas"]
    bounds = {
        schemas[model]["properties"][name]["maxLength"]
        for model, name in (("EscalateRequest", "reason"), ("ResolveRequest", "resolution"))
    }
    assert bounds == {MAX_TEXT_CHARS}
