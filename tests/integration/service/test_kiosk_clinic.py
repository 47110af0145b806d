"""A ``telehealth-agent run`` kiosk whose clinic is down or refuses its credential: READY idle (the
API answers), and STATUS=, the log and the API say plainly what it waits for; a refusal is asked
again at the slow pace, an outage with the fast back-off, and once the clinic answers the status
is ``idle`` again. A kiosk first started offline starts again once the clinic is back, even though
the sink already holds this device's earlier records (a re-imaged kiosk).

Real parts: the process, the development stack's clinic behind a front on a port of the test's
choosing (down: nothing listens there), its audit sink, a NOTIFY_SOCKET reader."""

from __future__ import annotations

import asyncio
import shutil
import signal
import socket
import time
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from telehealth_client.audit.trail import AuditTrail, ChainKeys, verify_chain
from telehealth_client.security.clinic_client import ClinicClient
from telehealth_devstack.stack import DevStack
from tests.integration.service.test_start_as_service import ClinicFront
from tests.support.api import KIOSK
from tests.support.audit import kiosk_event, sink_events
from tests.support.cli import Process, notified, notify_socket
from tests.support.notify import Agents, free_port, status_containing, waiting_environment

pytestmark = pytest.mark.integration

API_TOKEN = "kiosk-clinic-api-token"
STOP_BOUND_SECONDS = 10.0
COME_BACK_SECONDS = 60.0
WHAT = "for the audit trail (the sink's head)"


class CountingFront(ClinicFront):
    """The front, counting the requests that reached it by path."""

    def __init__(self, target: str, port: int) -> None:
        super().__init__(target, port)
        self.paths: list[str] = []
        self.arrived = asyncio.Event()

    async def _forward(self, request: web.Request) -> web.Response:
        self.paths.append(request.path)
        self.arrived.set()
        return await super()._forward(request)


def kiosk_environment(stack: DevStack, notify: Path) -> tuple[dict[str, str], int, int]:
    """The kiosk's settings with its clinic and its API each on a free port (nothing listens at the
    clinic's until a test's front does), and those two ports."""
    clinic_port, api_port = free_port(), free_port()
    environment = waiting_environment(
        stack, KIOSK, clinic_port=clinic_port, api_port=api_port, api_token=API_TOKEN, notify=notify
    )
    return environment, clinic_port, api_port


async def status_equal(sock: socket.socket, wanted: str, within: float) -> None:
    """Until a ``STATUS=`` value is exactly ``wanted``."""
    loop = asyncio.get_running_loop()

    async def receive() -> None:
        while True:
            fields = (await loop.sock_recv(sock, 4096)).decode().split("\n")
            if f"STATUS={wanted}" in fields:
                return

    await asyncio.wait_for(receive(), within)


async def api_status(port: int) -> str:
    headers = {"Authorization": f"Bearer {API_TOKEN}"}
    async with (
        aiohttp.ClientSession(headers=headers) as http,
        http.get(f"http://127.0.0.1:{port}/v1/status") as answer,
    ):
        assert answer.status == 200, await answer.text()
        body = await answer.json()
        return str(body["status"])


async def stopped(process: Process) -> tuple[int, str]:
    began = time.monotonic()
    process.send_signal(signal.SIGTERM)
    code, out, err = await process.finish()
    assert time.monotonic() - began < STOP_BOUND_SECONDS
    return code, out + err


async def test_a_kiosk_whose_credential_the_clinic_refuses_says_so_and_asks_again_slowly(
    kiosk_stack: DevStack, tmp_path: Path, agents: Agents
) -> None:
    assert kiosk_stack.clinic is not None
    environment, clinic_port, api_port = kiosk_environment(kiosk_stack, tmp_path / "notify.sock")
    environment["TELEHEALTH_DEVICE_CREDENTIAL"] = "wrong"
    with notify_socket(tmp_path / "notify.sock") as notify:
        async with CountingFront(kiosk_stack.clinic.url, clinic_port) as front:
            kiosk = await agents.run(environment)
            ready = await notified(notify, b"READY=1", within=30.0)
            assert b"STATUS=idle" in ready or any(f.startswith(b"STATUS=the clinic refused") for f in ready)
            refused = (
                f"the clinic refused this device's credential (device_credential) {WHAT} "
                "(HTTP 401; attempt 1, next in 60.0 s)"
            )
            line = await status_containing(notify, "the clinic refused", within=30.0)
            assert line == f"{refused}, idle", line
            logged = await kiosk.next_line("the clinic refused this device's credential")
            assert "level=error" in logged and refused in logged, logged
            assert refused in await api_status(api_port)
            assert front.paths == ["/api/audit-events/head"]  # the trail's one request, not repeated
            front.arrived.clear()
            with pytest.raises(TimeoutError):  # the slow pace: not asked again within seconds
                await asyncio.wait_for(front.arrived.wait(), 5.0)
            code, written = await stopped(kiosk)
    assert code == 0, written
    assert "audit sink head not read ... error=ClinicError" not in written
    assert "error=ClinicError at" not in written


async def test_a_kiosk_whose_clinic_is_down_says_so_and_is_idle_again_once_it_answers(
    kiosk_stack: DevStack, tmp_path: Path, agents: Agents
) -> None:
    assert kiosk_stack.clinic is not None
    environment, clinic_port, api_port = kiosk_environment(kiosk_stack, tmp_path / "notify.sock")
    clinic = f"the clinic backend http://127.0.0.1:{clinic_port}"
    with notify_socket(tmp_path / "notify.sock") as notify:
        kiosk = await agents.run(environment)
        await notified(notify, b"READY=1", within=30.0)
        waiting = await status_containing(notify, "attempt 2,", within=COME_BACK_SECONDS)
        assert waiting.startswith(f"waiting for {clinic} {WHAT} ("), waiting
        assert waiting.endswith(", idle"), waiting
        logged = await kiosk.next_line(f"waiting for {clinic} {WHAT}")
        assert "level=warning" in logged, logged
        assert f"waiting for {clinic}" in await api_status(api_port)
        async with ClinicFront(kiosk_stack.clinic.url, clinic_port):
            await status_equal(notify, "idle", COME_BACK_SECONDS)
            await kiosk.next_line("agent no longer waiting")
            assert await api_status(api_port) == "idle"
            code, written = await stopped(kiosk)
    assert code == 0, written


async def deliver_three(stack: DevStack, state_dir: Path) -> None:
    """The sink holds the kiosk's sequences 1-3, from a trail in ``state_dir`` (then removed)."""
    assert stack.clinic is not None
    clinic = ClinicClient(stack.clinic.url, stack.kiosk_credential(KIOSK), timeout_seconds=5.0)
    trail = AuditTrail(
        state_dir,
        keys=ChainKeys(stack.kiosk_credential(KIOSK)),
        device_id=KIOSK,
        organization_id=stack.organization_id,
        sink=clinic,
    )
    try:
        await trail.open()
        for number in range(3):
            await trail.record(kiosk_event(number, stack.organization_id))
        assert await trail.wait_delivered(15.0)
    finally:
        await trail.aclose()
        await clinic.aclose()
    shutil.rmtree(state_dir)


async def test_a_kiosk_first_started_offline_starts_again_once_the_clinic_answers(
    kiosk_stack: DevStack, tmp_path: Path, agents: Agents
) -> None:
    """A re-imaged kiosk (the sink holds its sequences 1-3) first started with the clinic down
    begins its trail at sequence 1; started again with the clinic up it stays up, its trail
    placed after the sink's head, and what it records next is sequence 4."""
    assert kiosk_stack.clinic is not None
    await deliver_three(kiosk_stack, tmp_path / "before-reimage")
    environment, clinic_port, _ = kiosk_environment(kiosk_stack, tmp_path / "notify.sock")
    state_dir = Path(environment["TELEHEALTH_STATE_DIR"])
    with notify_socket(tmp_path / "notify.sock") as notify:
        first = await agents.run(environment)
        await notified(notify, b"READY=1", within=30.0)
        await status_containing(notify, "waiting for the clinic backend", within=COME_BACK_SECONDS)
        code, written = await stopped(first)
        assert code == 0, written

        async with ClinicFront(kiosk_stack.clinic.url, clinic_port):
            second = await agents.run(environment)
            ready = await notified(notify, b"READY=1", within=30.0)
            assert b"STATUS=idle" in ready, ready
            await second.next_line("agent started")
            assert second.process.returncode is None  # not refused as a rollback
            code, written = await stopped(second)
    assert code == 0, written
    assert "the sink already holds sequence" not in written
    keys = ChainKeys(kiosk_stack.kiosk_credential(KIOSK))
    report = verify_chain(state_dir, keys, KIOSK)
    assert (report.ok, report.base, report.records, report.acknowledged) == (True, 3, 0, 3)
    assert [event["sequence"] for event in await sink_events(kiosk_stack)] == [1, 2, 3]
