"""``telehealth-agent run`` as a service at boot: the PubNub origin or the clinic backend not there
yet, or the clinic refusing the cart's credential. It says READY (the local API answers), keeps
trying with back-off and says what it waits for (STATUS=, the log, the API), comes up soon after
what it waited for answers, and a SIGTERM while it waits stops it at once with exit 0.

Real parts: the process, the development relay stopped and started on its port, the clinic
stand-in behind a front on a port of the test's choosing (down: nothing listens there yet)."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path
from types import TracebackType

import aiohttp
import pytest
from aiohttp import web

from telehealth_devstack.relay import Relay
from telehealth_devstack.stack import DevStack
from tests.support import bus as bus_support
from tests.support.api import CHECK_IN, KIOSK, record_consent
from tests.support.cli import Process, clean_environment, notified, notify_socket
from tests.support.notify import (
    Agents,
    free_port,
    pending,
    status_containing,
    under_systemd,
    waiting_environment,
)

pytestmark = pytest.mark.integration

CART = "dr-demo"  # the development stack's provider
NURSE = "nurse-boot"
API_TOKEN = "service-api-token"
# kiosk.service's TimeoutStopSec is 20 s: a stop while waiting must be far inside it. The time
# itself belongs to scripts/bench_agent.py; this bound only catches a stop that waits for the wait.
STOP_BOUND_SECONDS = 10.0
# Generous: the agent retries at most a second apart here, on a machine shared with other tests.
COME_BACK_SECONDS = 60.0


@pytest.fixture
async def stack() -> AsyncIterator[DevStack]:
    async with DevStack(nurses=(NURSE,)) as running:
        yield running


async def stopped_in(process: Process) -> tuple[int, float, str]:
    """SIGTERM, then its exit code, how long it took and what it logged."""
    began = time.monotonic()
    process.send_signal(signal.SIGTERM)
    code, out, err = await process.finish()
    return code, time.monotonic() - began, out + err


async def api_get(port: int, path: str) -> tuple[int, dict[str, object]]:
    headers = {"Authorization": f"Bearer {API_TOKEN}"}
    async with (
        aiohttp.ClientSession(headers=headers) as http,
        http.get(f"http://127.0.0.1:{port}{path}") as answer,
    ):
        body: dict[str, object] = await answer.json()
        return answer.status, body


async def test_an_unreachable_pubnub_origin_at_start_is_waited_for(
    relay: Relay, tmp_path: Path, agents: Agents
) -> None:
    await relay.stop()  # the origin is down at boot; it comes back on the same port
    with under_systemd(
        tmp_path,
        {
            "TELEHEALTH_ROLE": "provider",
            "TELEHEALTH_USER_ID": "dr-boot",
            "TELEHEALTH_ORIGIN": relay.origin,
            "TELEHEALTH_SSL": "false",
            "TELEHEALTH_PUBLISH_KEY": bus_support.PUBLISH_KEY,
            "TELEHEALTH_SUBSCRIBE_KEY": bus_support.SUBSCRIBE_KEY,
            "TELEHEALTH_CIPHER_KEY": "service-cipher-key-0001",
            "TELEHEALTH_API_TOKEN": API_TOKEN,
            "TELEHEALTH_API_PORT": "0",
            "TELEHEALTH_RECONNECT_MAX_SECONDS": "1",
        },
    ) as (notify, environment):
        process = await agents.run(environment)
        await notified(notify, b"READY=1", within=30.0)
        waiting = await status_containing(notify, "attempt 3,", within=COME_BACK_SECONDS)
        assert waiting.startswith(f"waiting for PubNub origin {relay.origin} ("), waiting
        assert waiting.endswith("pub/sub reconnecting"), waiting
        await process.next_line(f"waiting for PubNub origin {relay.origin}")
        assert process.process.returncode is None  # several rounds on, still running

        await relay.start()
        await status_containing(notify, "pub/sub connected", within=COME_BACK_SECONDS)
        await relay.wait_for_subscribers(1)
        code, took, written = await stopped_in(process)
    assert code == 0, written
    assert took < STOP_BOUND_SECONDS, took
    assert "agent no longer waiting" in written


class ClinicFront:
    """The clinic stand-in reached through ``port``: until entered nothing listens there (the
    clinic down at boot, connection refused); entered, every request goes through to it."""

    def __init__(self, target: str, port: int) -> None:
        self._target = target
        self._port = port
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None

    async def _forward(self, request: web.Request) -> web.Response:
        assert self._session is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() in ("authorization", "content-type")}
        async with self._session.request(
            request.method, self._target + request.path_qs, headers=headers, data=await request.read()
        ) as answer:
            return web.Response(
                status=answer.status, body=await answer.read(), content_type=answer.content_type
            )

    async def __aenter__(self) -> ClinicFront:
        self._session = aiohttp.ClientSession()
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._forward)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self._port).start()
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()


@pytest.mark.parametrize(("user", "role"), [(CART, "provider"), (NURSE, "nurse")])
async def test_a_clinic_down_at_start_is_waited_for_and_the_api_says_so(
    user: str, role: str, stack: DevStack, tmp_path: Path, agents: Agents
) -> None:
    assert stack.clinic is not None
    clinic_port, api_port = free_port(), free_port()
    notify_path = tmp_path / "notify.sock"
    with notify_socket(notify_path) as notify:
        environment = waiting_environment(
            stack, user, clinic_port=clinic_port, api_port=api_port, api_token=API_TOKEN, notify=notify_path
        )
        process = await agents.run(environment)
        await notified(notify, b"READY=1", within=30.0)
        waiting = await status_containing(notify, "attempt 3,", within=COME_BACK_SECONDS)
        clinic = f"the clinic backend http://127.0.0.1:{clinic_port}"
        assert waiting.startswith(f"waiting for {clinic} for the {role}'s standing token ("), waiting
        await process.next_line(f"waiting for {clinic}")
        # The API answers meanwhile: its status and readiness say what the cart waits for.
        status, body = await api_get(api_port, "/v1/status")
        assert status == 200 and f"waiting for {clinic}" in str(body["status"]), body
        status, body = await api_get(api_port, "/v1/ready")
        assert (status, body["ready"]) == (503, False), body
        assert f"waiting for {clinic}" in str(body["reason"]), body
        if role == "provider":  # its endpoint's routes: 503 starting, not a 500
            status, body = await api_get(api_port, "/v1/waiting-room")
            assert (status, body["error"]) == (503, "starting"), body
            assert f"waiting for {clinic}" in str(body["message"])

        async with ClinicFront(stack.clinic.url, clinic_port):
            await status_containing(notify, "pub/sub connected", within=COME_BACK_SECONDS)
            await process.next_line(f"agent started role={role} user={user}")
            assert (await api_get(api_port, "/v1/ready"))[0] == 200
            if role == "provider":
                status, body = await api_get(api_port, "/v1/waiting-room")
                assert (status, body) == (200, {"waiting": []})
            code, took, written = await stopped_in(process)
    assert code == 0, written
    assert took < STOP_BOUND_SECONDS, took


async def test_a_refused_credential_is_named_retried_slowly_and_a_sigterm_stops_at_once(
    stack: DevStack, tmp_path: Path, agents: Agents
) -> None:
    with under_systemd(
        tmp_path,
        {
            **stack.agent_environment(CART),
            "TELEHEALTH_DEVICE_CREDENTIAL": "not-the-credential-of-this-cart",
            "TELEHEALTH_MEDIA": "false",
        },
    ) as (notify, environment):
        process = await agents.run(environment)
        await notified(notify, b"READY=1", within=30.0)
        refused = await status_containing(notify, "refused", within=COME_BACK_SECONDS)
        assert refused.startswith(
            "the clinic refused this device's credential (device_credential) for the provider's standing "
            "token (HTTP 401; attempt 1, next in 60.0 s)"
        ), refused
        line = await process.next_line("the clinic refused this device's credential (device_credential)")
        assert "level=error" in line
        code, took, written = await stopped_in(process)
        await notified(notify, b"STOPPING=1")
    assert code == 0, written
    assert took < STOP_BOUND_SECONDS, took
    assert "not-the-credential-of-this-cart" not in written


class SilentClinic:
    """A clinic URL whose server accepts connections and never answers: the agent's start waits
    there (the audit sink's head, asked as its trail opens). ``asked`` is set once it connected."""

    def __init__(self) -> None:
        self.asked = asyncio.Event()
        self._server: asyncio.Server | None = None
        self._held: list[asyncio.StreamWriter] = []

    async def _hold(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._held.append(writer)
        self.asked.set()
        await reader.read()  # until the agent goes away

    async def __aenter__(self) -> str:
        self._server = await asyncio.start_server(self._hold, "127.0.0.1", 0)
        return f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        for writer in self._held:
            writer.close()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


async def test_a_sigterm_during_the_start_itself_exits_0_at_once_never_ready(
    relay: Relay, tmp_path: Path, agents: Agents
) -> None:
    silent = SilentClinic()
    notify_path = tmp_path / "notify.sock"
    async with silent as clinic_url:
        with notify_socket(notify_path) as notify:
            environment = clean_environment(
                {
                    "TELEHEALTH_USER_ID": "kiosk-boot",
                    "TELEHEALTH_ORIGIN": relay.origin,
                    "TELEHEALTH_SSL": "false",
                    "TELEHEALTH_PUBLISH_KEY": bus_support.PUBLISH_KEY,
                    "TELEHEALTH_SUBSCRIBE_KEY": bus_support.SUBSCRIBE_KEY,
                    "TELEHEALTH_CIPHER_KEY": "service-cipher-key-0001",
                    "TELEHEALTH_DEVICE_CREDENTIAL": "kiosk-boot-credential",
                    "TELEHEALTH_CLINIC_URL": clinic_url,
                    "TELEHEALTH_API_TOKEN": API_TOKEN,
                    "TELEHEALTH_API_PORT": "0",
                    "NOTIFY_SOCKET": str(notify_path),
                }
            )
            process = await agents.run(environment)
            await asyncio.wait_for(silent.asked.wait(), 30.0)  # the start is waiting on the clinic
            code, took, written = await stopped_in(process)
            datagrams = pending(notify)
    assert code == 0, written
    assert took < STOP_BOUND_SECONDS, took
    assert not any("READY=1" in fields for fields in datagrams), datagrams
    assert "local api listening" not in written


async def test_a_kiosk_resumes_its_saved_consultation_once_the_clinic_answers(
    kiosk_stack: DevStack, tmp_path: Path, agents: Agents
) -> None:
    assert kiosk_stack.clinic is not None
    clinic_port, api_port = free_port(), free_port()
    notify_path = tmp_path / "notify.sock"
    environment = waiting_environment(
        kiosk_stack,
        KIOSK,
        clinic_port=clinic_port,
        api_port=api_port,
        api_token=API_TOKEN,
        notify=notify_path,
    )
    with notify_socket(notify_path) as notify:
        async with ClinicFront(kiosk_stack.clinic.url, clinic_port):
            first = await agents.run(environment)
            await notified(notify, b"READY=1", within=30.0)
            await record_consent(kiosk_stack)
            headers = {"Authorization": f"Bearer {API_TOKEN}"}
            async with (
                aiohttp.ClientSession(headers=headers) as http,
                http.post(f"http://127.0.0.1:{api_port}/v1/check-in", json=CHECK_IN) as answer,
            ):
                assert answer.status == 201, await answer.text()
            await status_containing(notify, ", pub/sub connected")
            code, _, written = await stopped_in(first)  # the consultation's state file stays
            assert code == 0, written

        # Restarted with the clinic away: ready idle at once, the consultation resumed later.
        second = await agents.run(environment)
        ready = await notified(notify, b"READY=1", within=30.0)
        assert b"STATUS=idle" in ready
        waiting = await status_containing(notify, "attempt 2,", within=COME_BACK_SECONDS)
        clinic = f"the clinic backend http://127.0.0.1:{clinic_port}"
        assert waiting.startswith(f"waiting for {clinic} for the saved consultation ("), waiting
        assert waiting.endswith(", idle"), waiting
        async with ClinicFront(kiosk_stack.clinic.url, clinic_port):
            line = await status_containing(notify, ", call none, pub/sub connected", within=COME_BACK_SECONDS)
            assert line.startswith("consultation "), line
            await second.next_line("consultation resumed")
            code, took, written = await stopped_in(second)
    assert code == 0, written
    assert took < STOP_BOUND_SECONDS, took
