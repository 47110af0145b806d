"""The clinic stand-in answers browsers as the relay does: CORS on every answer, OPTIONS preflight.

A provider page on another origin fetches its token and TURN credentials with ``fetch`` and an
``Authorization`` header: the browser first sends a preflight without any credential.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest

from telehealth_devstack.clinic import Clinic
from tests.support.clinic import CART_CREDENTIALS

pytestmark = pytest.mark.integration

PAGE_ORIGIN = "http://127.0.0.1:8765"


@pytest.fixture
async def browser() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(headers={"Origin": PAGE_ORIGIN}) as session:
        yield session


@pytest.mark.parametrize(
    "path",
    ["/api/telemedicine/token", "/api/telemedicine/turn-credentials", "/api/telemedicine/invite"],
)
async def test_a_preflight_is_answered_without_a_credential(
    offline_clinic: Clinic, browser: aiohttp.ClientSession, path: str
) -> None:
    headers = {
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization,content-type",
    }
    async with browser.options(offline_clinic.url + path, headers=headers) as answer:
        assert answer.status == 204
        assert answer.headers["Access-Control-Allow-Origin"] == "*"
        allowed_headers = {
            h.strip().lower() for h in answer.headers["Access-Control-Allow-Headers"].split(",")
        }
        assert {"authorization", "content-type"} <= allowed_headers
        allowed_methods = {m.strip() for m in answer.headers["Access-Control-Allow-Methods"].split(",")}
        assert {"GET", "POST"} <= allowed_methods
        assert int(answer.headers["Access-Control-Max-Age"]) > 0


async def test_answers_and_refusals_carry_cors_headers(
    offline_clinic: Clinic, browser: aiohttp.ClientSession
) -> None:
    url = offline_clinic.url + "/api/telemedicine/turn-credentials"
    dr_lee = {"Authorization": f"Bearer {CART_CREDENTIALS['dr-lee']}"}
    cases = [
        ({"userId": "dr-lee"}, dr_lee, 200),
        ({"userId": "dr-lee"}, {}, 401),  # no credential
        ({"userId": "dr-okafor"}, dr_lee, 403),  # not its user
        ({"userId": "dr.lee"}, dr_lee, 400),  # bad input
    ]
    for body, headers, status in cases:
        async with browser.post(url, json=body, headers=headers) as answer:
            assert answer.status == status
            assert answer.headers["Access-Control-Allow-Origin"] == "*"
    # aiohttp's own refusals too: an unknown path, a wrong method.
    async with browser.get(offline_clinic.url + "/api/nowhere", headers=dr_lee) as answer:
        assert (answer.status, answer.headers["Access-Control-Allow-Origin"]) == (404, "*")
    async with browser.get(url, headers=dr_lee) as answer:
        assert (answer.status, answer.headers["Access-Control-Allow-Origin"]) == (405, "*")
