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

from telehealth_client.security.clinic_client import ClinicClient, ClinicError, Invitation
from telehealth_devstack.clinic import Clinic
from tests.support.clinic import CART_CREDENTIALS, KIOSK_CREDENTIAL

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


CONSULTATION = "consultation.dr-lee.patient-1"
# One call per clinic operation, named as its ClinicError names it.
CALLS: dict[str, Callable[[ClinicClient], Awaitable[object]]] = {
    "token": lambda client: client.request_token("patient-1", "patient", providerId="dr-lee"),
    "turn-credentials": lambda client: client.turn_credentials("patient-1"),
    "consent": lambda client: client.record_consent("patient-1", True, None),
    "invite": lambda client: client.invite(CONSULTATION, "dr-okafor", "specialist"),
    "revoke-access": lambda client: client.revoke_access("patient-1", CONSULTATION),
}


async def failure(base_url: str, call: str, credential: str = KIOSK_CREDENTIAL, **kwargs: Any) -> ClinicError:
    client = ClinicClient(base_url, credential, timeout_seconds=kwargs.pop("timeout_seconds", 10.0))
    try:
        # A bound well above the client's own timeout: a client that never gives up fails here.
        async with asyncio.timeout(10):
            with pytest.raises(ClinicError) as caught:
                await CALLS[call](client)
    finally:
        await client.aclose()
    return caught.value


@pytest.mark.parametrize("call", sorted(CALLS))
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
        ("token", (200, "application/json", '{"token": "t", "ttlMinutes": 43201}'), 1),
        ("token", (200, "application/json", '{"token": "t", "ttlMinutes": ' + "9" * 400 + "}"), 1),
        ("turn-credentials", (200, "application/json", "{}"), 4),
        ("turn-credentials", (200, "application/json", '{"urls": [], "ttlSeconds": 60}'), 3),
        # Consent: the record is the answer's "consent" object.
        ("consent", (200, "application/json", '{"granted": true, "expiresAt": null}'), 1),
        ("consent", (200, "application/json", '[{"consent": {"granted": true, "expiresAt": null}}]'), 1),
        ("consent", (200, "application/json", '{"consent": {"granted": 1}}'), 2),
        ("consent", (204, "application/json", ""), 1),
        ("invite", (200, "application/json", "{}"), 4),
        (
            "invite",
            (
                200,
                "application/json",
                '{"consultationChannel": "", "invitedProviderId": "", "role": "boss", "invitedBy": ""}',
            ),
            4,
        ),
        ("revoke-access", (200, "application/json", '{"revoked": -1}'), 1),
        ("revoke-access", (200, "application/json", '{"revoked": "2"}'), 1),
        ("revoke-access", (200, "application/json", '{"revoked": 1.0}'), 1),
        ("revoke-access", (204, "application/json", ""), 1),
    ],
)
async def test_a_malformed_answer_is_refused_with_the_number_of_problems(
    broken_backend: BrokenBackend, call: str, answer: Answer, problems: int
) -> None:
    error = await failure(await broken_backend(answer), call)
    assert (error.operation, error.status) == (call, None)
    assert str(error) == f"{call}: malformed answer: {problems} problem(s)"


async def test_the_longest_ttl_pubnub_grants_is_accepted(broken_backend: BrokenBackend) -> None:
    url = await broken_backend((200, "application/json", '{"token": "t", "ttlMinutes": 43200}'))
    client = ClinicClient(url, KIOSK_CREDENTIAL)
    try:
        assert (await client.request_token("patient-1", "patient")).ttl_minutes == 43_200
    finally:
        await client.aclose()


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


@pytest.mark.parametrize(
    ("answer", "revoked"),
    [('{"revoked": 0}', 0), ('{"revoked": 3, "extra": true}', 3)],
)
async def test_revoke_access_reads_the_count_the_backend_answers(
    broken_backend: BrokenBackend, answer: str, revoked: int
) -> None:
    client = ClinicClient(await broken_backend((200, "application/json", answer)), KIOSK_CREDENTIAL)
    try:
        assert await client.revoke_access("patient-1", CONSULTATION) == revoked
    finally:
        await client.aclose()


async def test_an_invitation_is_the_clinics_record_of_it(offline_clinic: Clinic) -> None:
    provider = ClinicClient(offline_clinic.url, CART_CREDENTIALS["dr-lee"])
    try:
        invitation = await provider.invite(CONSULTATION, "dr-okafor", "second-opinion")
    finally:
        await provider.aclose()
    assert invitation == Invitation(
        consultationChannel=CONSULTATION,
        invitedProviderId="dr-okafor",
        role="second-opinion",
        invitedBy="dr-lee",
    )


async def test_consent_is_read_from_the_answers_consent_record(clinic: Clinic) -> None:
    kiosk = ClinicClient(clinic.url, KIOSK_CREDENTIAL)
    try:
        consent = await kiosk.record_consent("patient-3", False, None)
    finally:
        await kiosk.aclose()
    assert (consent.granted, consent.expires_at) == (False, None)


@pytest.mark.parametrize(
    ("context", "message"),
    [
        (
            {"userId": "x"},
            "userId: is not a token request field "
            "(appointmentId, consultationChannel, departmentId, providerId)",
        ),
        # Several: the first in sorted order is named.
        ({"zone": "x", "Role": "y", "providerId": "dr-lee"}, "Role: is not a token request field"),
    ],
)
async def test_an_unknown_token_request_field_is_named_before_anything_is_sent(
    silent_backend: str, context: dict[str, str], message: str
) -> None:
    client = ClinicClient(silent_backend, KIOSK_CREDENTIAL, timeout_seconds=0.5)
    try:
        with pytest.raises(ValueError) as caught:
            await client.request_token("patient-1", "patient", **context)
    finally:
        await client.aclose()
    assert str(caught.value).startswith(message)


def test_a_clinic_error_without_a_status_says_no_status() -> None:
    error = ClinicError("token", "clinic backend timed out")
    assert (str(error), error.operation, error.status) == ("token: clinic backend timed out", "token", None)
