"""The clinic client's audit sink and on-call calls: against the real clinic stand-in, and against a
small aiohttp server in this file for the answers the stand-in never gives (a fake: no real part
answers malformed JSON or the wrong status).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web

from telehealth_client.protocol import messages
from telehealth_client.protocol.channels import InvalidIdError
from telehealth_client.security.clinic_client import ClinicClient, ClinicError
from telehealth_devstack.stack import DevStack
from tests.support.audit import Trails, kiosk_event, sink_events
from tests.support.consultation import DEPARTMENT, PROVIDER, SPECIALIST

pytestmark = pytest.mark.integration

Backend = Callable[[int, Any], Awaitable[str]]


@pytest.fixture
async def backend() -> AsyncIterator[Backend]:
    """A server answering every request with the given status and JSON body; returns its URL."""
    runners: list[web.AppRunner] = []

    async def start(status: int, body: Any) -> str:
        async def handle(request: web.Request) -> web.Response:
            return web.json_response(body, status=status)

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", handle)
        runner = web.AppRunner(app)
        await runner.setup()
        runners.append(runner)
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        return f"http://127.0.0.1:{runner.addresses[0][1]}"

    yield start
    for runner in runners:
        await runner.cleanup()


async def test_an_audit_event_is_posted_and_stored_once(stack: DevStack, trails: Trails) -> None:
    client = trails.clinic()
    event = messages.encode(kiosk_event(1, stack.organization_id))
    await client.post_audit_event(event)
    await client.post_audit_event(event)  # again, as after a crash: still one copy
    assert await sink_events(stack) == [event]


async def test_a_refused_audit_event_is_a_clinic_error_with_the_status_and_field(
    stack: DevStack, trails: Trails
) -> None:
    client = trails.clinic()
    other = messages.encode(kiosk_event(1, "org-elsewhere"))
    with pytest.raises(
        ClinicError, match=r"^audit-event: refused: organizationId: .*\(HTTP 403\)$"
    ) as refused:
        await client.post_audit_event(other)
    assert refused.value.status == 403
    assert await sink_events(stack) == []


@pytest.mark.parametrize(
    ("status", "body", "reason"),
    [
        (200, {"id": "x", "stored": True}, r"unexpected answer, not 201 \(HTTP 200\)"),
        (201, {"stored": True}, "malformed answer: id: is missing"),
        (
            201,
            {"id": "4f1c2b9e-0000-4000-8000-000000000000"},
            "malformed answer: id: is not the posted event's",
        ),
    ],
)
async def test_an_audit_post_not_acknowledged_as_this_event_is_an_error(
    backend: Backend, status: int, body: Any, reason: str
) -> None:
    client = ClinicClient(await backend(status, body), "credential")
    try:
        with pytest.raises(ClinicError, match=rf"^audit-event: {reason}$"):
            await client.post_audit_event(messages.encode(kiosk_event(1, "org-dev")))
    finally:
        await client.aclose()


async def test_on_call_lists_the_departments_providers(stack: DevStack, trails: Trails) -> None:
    client = trails.clinic(user_id=PROVIDER)
    assert await client.on_call(DEPARTMENT) == [PROVIDER, SPECIALIST]
    assert await client.on_call("no-such-department") == []
    assert stack.clinic is not None
    stack.clinic.set_on_call(DEPARTMENT, [SPECIALIST])
    assert await client.on_call(DEPARTMENT) == [SPECIALIST]


async def test_a_bad_department_id_is_refused_before_asking(backend: Backend) -> None:
    client = ClinicClient(await backend(500, {}), "credential")  # would fail differently if asked
    try:
        with pytest.raises(InvalidIdError, match=r"^departmentId: may contain only"):
            await client.on_call("er/../admin")
    finally:
        await client.aclose()


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ([], "providers: must be a list"),
        ({"providers": "dr-lee"}, "providers: must be a list"),
        ({"providers": [{"id": "dr-lee"}, {}]}, r"providers\[1\]\.id: must be a string, got NoneType"),
        ({"providers": ["dr-lee"]}, r"providers\[0\]\.id: must be a string, got NoneType"),
        ({"providers": [{"id": "dr.lee"}]}, r"providers\[0\]\.id: may contain only"),
        ({"providers": [{"id": "x" * 65}]}, r"providers\[0\]\.id: must be at most 64 characters"),
    ],
)
async def test_a_malformed_on_call_answer_is_refused_naming_the_field(
    backend: Backend, body: Any, reason: str
) -> None:
    client = ClinicClient(await backend(200, body), "credential")
    try:
        with pytest.raises(ClinicError, match=rf"^on-call: malformed answer: {reason}"):
            await client.on_call(DEPARTMENT)
    finally:
        await client.aclose()
