"""What the clinic client says for each way the backend can refuse or fail, exactly.

Against the real clinic stand-in wherever it can produce the case. The stand-in always answers
well-formed JSON, so a broken backend (a proxy's HTML error page, a malformed grant, an over-long
refusal) is a small aiohttp server in this file that answers as told (a fake: no real part answers
like that), and a backend that never answers is a socket that accepts and stays silent.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web

from telehealth_client.devstack.clinic import Clinic
from telehealth_client.security.clinic_client import ClinicClient, ClinicError

from .conftest import KIOSK_CREDENTIAL

Answer = tuple[int, str, str]  # status, content type, body
BrokenBackend = Callable[[Answer], Awaitable[str]]


@pytest.fixture
async def broken_backend() -> AsyncIterator[BrokenBackend]:
    """Starts a server that answers every POST with the given answer; returns its URL."""
    runners: list[web.AppRunner] = []

    async def start(answer: Answer) -> str:
        status, content_type, body = answer

        async def handle(request: web.Request) -> web.Response:
            return web.Response(status=status, content_type=content_type, text=body)

        app = web.Application()
        app.router.add_post("/{tail:.*}", handle)
        runner = web.AppRunner(app)
        await runner.setup()
        runners.append(runner)
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        return f"http://127.0.0.1:{port}"

    yield start
    for runner in runners:
        await runner.cleanup()


@pytest.fixture
async def silent_backend() -> AsyncIterator[str]:
    """A backend that accepts connections and never answers; its URL."""
    writers: list[asyncio.StreamWriter] = []

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        await reader.read()  # until the client gives up and closes

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}"
    for writer in writers:
        writer.close()
    server.close()
    await server.wait_closed()


async def failure(base_url: str, call: str, credential: str = KIOSK_CREDENTIAL, **kwargs: Any) -> ClinicError:
    client = ClinicClient(base_url, credential, timeout_seconds=kwargs.pop("timeout_seconds", 10.0))
    try:
        # A bound well above the client's own timeout: a client that never gives up fails here.
        async with asyncio.timeout(10):
            with pytest.raises(ClinicError) as caught:
                if call == "token":
                    await client.request_token("patient-1", "patient", providerId="dr-lee")
                else:
                    await client.turn_credentials("patient-1")
    finally:
        await client.aclose()
    return caught.value


@pytest.mark.parametrize("call", ["token", "turn-credentials"])
async def test_a_refusal_names_the_operation_the_reason_and_the_status(
    offline_clinic: Clinic, call: str
) -> None:
    error = await failure(offline_clinic.url, call, credential="not-a-credential")
    assert (error.operation, error.status) == (call, 401)
    assert str(error) == f"{call}: refused: Authorization: is not a valid device credential (HTTP 401)"


async def test_an_unreachable_backend_is_named_by_the_kind_of_failure_without_a_status() -> None:
    with socket.socket() as probe:  # a port nobody listens on any more
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    error = await failure(f"http://127.0.0.1:{port}", "token")
    assert (error.operation, error.status) == ("token", None)
    assert str(error) == "token: clinic backend unreachable: ClientConnectorError"


async def test_a_backend_that_never_answers_times_out(silent_backend: str) -> None:
    error = await failure(silent_backend, "turn-credentials", timeout_seconds=0.2)
    assert (error.operation, error.status) == ("turn-credentials", None)
    assert str(error) == "turn-credentials: clinic backend timed out"


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        # A proxy's error page, a JSON list, a reason without a field: no detail to pass on.
        ((502, "text/html", "<html>Bad Gateway</html>"), "refused"),
        ((403, "application/json", '["no"]'), "refused"),
        ((400, "application/json", '{"reason": "bad"}'), "refused"),
        ((400, "application/json", '{"field": "userId", "reason": 7}'), "refused"),
        # Long fields are cut: at most 64 characters of the field and 200 of the reason.
        (
            (400, "application/json", json.dumps({"field": "f" * 100, "reason": "r" * 300})),
            "refused: " + "f" * 64 + ": " + "r" * 200,
        ),
    ],
)
async def test_what_a_refusal_passes_on(broken_backend: BrokenBackend, answer: Answer, reason: str) -> None:
    error = await failure(await broken_backend(answer), "token")
    assert (error.operation, error.status) == ("token", answer[0])
    assert str(error) == f"token: {reason} (HTTP {answer[0]})"


@pytest.mark.parametrize(
    ("call", "answer", "problems"),
    [
        ("token", (200, "application/json", '{"token": "", "ttlMinutes": 0}'), 2),
        ("token", (204, "application/json", ""), 1),
        ("turn-credentials", (200, "application/json", "{}"), 4),
        ("turn-credentials", (200, "application/json", '{"urls": [], "ttlSeconds": 60}'), 3),
    ],
)
async def test_a_malformed_answer_is_refused_with_the_number_of_problems(
    broken_backend: BrokenBackend, call: str, answer: Answer, problems: int
) -> None:
    error = await failure(await broken_backend(answer), call)
    assert (error.operation, error.status) == (call, None)
    assert str(error) == f"{call}: malformed answer: {problems} problem(s)"


async def test_a_base_url_with_a_trailing_slash_works(offline_clinic: Clinic) -> None:
    client = ClinicClient(offline_clinic.url + "/", KIOSK_CREDENTIAL)
    try:
        assert (await client.turn_credentials("patient-1")).username.endswith(":patient-1")
    finally:
        await client.aclose()


async def test_aclose_closes_the_connections_and_the_client_can_be_used_again(offline_clinic: Clinic) -> None:
    client = ClinicClient(offline_clinic.url, KIOSK_CREDENTIAL)
    try:
        await client.turn_credentials("patient-1")
        # The private session is the only way to see that aclose really let the connections go.
        session = client._session
        await client.aclose()
        assert session is not None and session.closed
        assert (await client.turn_credentials("patient-2")).username.endswith(":patient-2")
    finally:
        await client.aclose()
