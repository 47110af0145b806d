"""Bodies the JSON decoder cannot take, on a real agent's API: 400, 415 or 422 naming the body,
never 500, and nothing changed; routes without a body still need no Content-Type."""

from __future__ import annotations

import pytest

from tests.support.api import RunningAgent

pytestmark = pytest.mark.integration

JSON = {"Content-Type": "application/json"}


def body_problem(answer: object, code: str) -> str:
    assert isinstance(answer, dict) and answer["error"] == code, answer
    assert [problem["field"] for problem in answer["fields"]] == ["body"], answer
    return str(answer["fields"][0]["reason"])


async def assert_still_idle(kiosk: RunningAgent) -> None:
    status, state = await kiosk.api.get("/v1/status")
    assert (status, state["status"], state["consultations"]) == (200, "idle", [])


async def test_a_body_nested_too_deep_is_422_naming_the_body(kiosk: RunningAgent) -> None:
    deep = b"[" * 32_000 + b"]" * 32_000  # under the 64 KiB limit; json recurses once per level
    status, answer = await kiosk.api.post("/v1/check-in", data=deep, headers=JSON)
    assert status == 422, answer
    assert "deeper than 64" in body_problem(answer, "invalid-body")
    await assert_still_idle(kiosk)


async def test_a_body_that_is_not_the_encoding_it_claims_is_400_naming_the_body(kiosk: RunningAgent) -> None:
    status, answer = await kiosk.api.post(
        "/v1/check-in", data=b'{"patientId": "x"}', headers={**JSON, "Content-Encoding": "gzip"}
    )
    assert status == 400, answer
    body_problem(answer, "bad-request")
    await assert_still_idle(kiosk)


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded"])
async def test_a_body_not_sent_as_json_is_415(kiosk: RunningAgent, content_type: str) -> None:
    status, answer = await kiosk.api.post(
        "/v1/consent/read",
        data=b'{"patientId": "pat-1", "providerId": "dr-1"}',
        headers={"Content-Type": content_type},
    )
    assert status == 415, answer
    body_problem(answer, "unsupported-media-type")


async def test_routes_without_a_body_need_no_content_type(kiosk: RunningAgent) -> None:
    status, answer = await kiosk.api.post("/v1/leave")  # no body, no Content-Type: the lifecycle answers
    assert (status, answer["error"]) == (409, "idle"), answer
    status, answer = await kiosk.api.post("/v1/device-checks", data=b"")  # an optional body left out
    assert status == 202, answer
