"""A retention pass over the whole state directory (``telehealth_client.retention``), and the agent
running it: delivered audit records pruned, stale outbox items expired, ended consultations' files
removed; an undelivered backlog over the limit (or older than the retention) reported loudly and
kept; the pass at start and its owned task; the warning in systemd's STATUS.

Real parts: the clinic stand-in's audit sink (through a TCP hop a test cuts), the real outbox,
consultation state files written by ``state_file.save``, a real agent on the relay with systemd's
notify socket. The clock is injected (moved 31 days on), never waited for.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from telehealth_client.agent import Agent
from telehealth_client.audit.trail import AuditTrail, ChainKeys
from telehealth_client.config import load_settings
from telehealth_client.consultation import state_file
from telehealth_client.consultation.lifecycle import Consultation
from telehealth_client.consultation.provider_sessions import CONSULTATIONS_DIR
from telehealth_client.durable.at_rest import Sealer
from telehealth_client.durable.outbox import Outbox
from telehealth_client.protocol.messages import ConsultationState as S
from telehealth_client.retention import Retention, RetentionPolicy
from telehealth_devstack.network import CuttableLink
from telehealth_devstack.relay import Relay
from telehealth_devstack.stack import DevStack
from tests.support import bus as bus_support
from tests.support.audit import WAIT, Trails, kiosk_event
from tests.support.logs import LogLines
from tests.support.outbox import Results, chat
from tests.support.recorder import Recorder

pytestmark = pytest.mark.integration

MONTH_ON = 31 * 86_400


def month_on() -> float:
    return time.time() + MONTH_ON


@pytest.fixture
async def outbox(tmp_path: Path) -> AsyncIterator[Outbox]:
    opened = Outbox(tmp_path / "outbox.sqlite3", Sealer("retention-pass-cipher-key", purpose="outbox"))
    await opened.open()
    yield opened
    await opened.aclose()


def ended(provider: str, patient: str, user: str, state: S = S.COMPLETED) -> Consultation:
    made = Consultation.new(
        consultation_id=f"consultation.{provider}.{patient}",
        user_id=user,
        role="provider" if user.startswith("dr-") else "patient",
    )
    return replace(made, state=state)


async def test_a_pass_prunes_every_store_and_keeps_what_waits_or_resumes(
    stack: DevStack, trails: Trails, tmp_path: Path
) -> None:
    online = await trails.trail(trails.clinic())
    for number in range(50):
        await online.record(kiosk_event(number, stack.organization_id))
    assert await online.wait_delivered(WAIT)
    await online.aclose()
    trail = await trails.trail(None)  # the sink out of reach from here on
    for number in range(50, 55):
        await trail.record(kiosk_event(number, stack.organization_id))

    results = Results()
    outbox = Outbox(
        tmp_path / "outbox.sqlite3",
        Sealer("retention-pass-key", purpose="outbox"),
        on_failed=results.on_failed,
    )
    await outbox.open()
    stale = [chat(f"never sent {n}") for n in range(2)]
    for item in stale:
        await outbox.put(item)

    consultations = tmp_path / "consultation"
    state_file.save(consultations, ended("dr-lee", "pt-1", "pt-1"))  # a kiosk's, ended
    each = consultations / CONSULTATIONS_DIR
    state_file.save(each / "consultation.dr-lee.pt-2", ended("dr-lee", "pt-2", "dr-lee"))
    state_file.save(each / "consultation.dr-lee.pt-3", ended("dr-lee", "pt-3", "dr-lee", S.IN_PROGRESS))

    retention = Retention(trail, outbox, consultations, RetentionPolicy(), clock=month_on)
    try:
        report = await retention.prune_now()
    finally:
        await retention.aclose()
        await outbox.aclose()

    assert (report.audit.records, report.audit.backlog.records) == (50, 5)
    assert (trail.status().records, trail.status().pruned) == (55, 50)
    assert (report.outbox_expired, report.outbox_waiting) == (2, 0)
    assert results.failed == [(item, "expired") for item in stale]
    assert report.consultation_files == 2
    assert state_file.load(consultations) is None
    assert sorted(os.listdir(each)) == ["consultation.dr-lee.pt-3"]  # resumed at the next start
    # The five the sink never acknowledged were recorded over the retention ago (by the clock):
    # kept, and said so.
    assert report.warning is not None
    assert report.warning.startswith("the audit sink has not acknowledged records since ")
    assert report.warning.endswith("over retention_days (30) ago: 5 wait (`telehealth-agent audit status`)")
    assert (await trail.verify()).ok


async def test_a_backlog_over_the_limit_is_reported_and_kept_until_the_sink_takes_it(
    stack: DevStack, trails: Trails, outbox: Outbox, tmp_path: Path, log_lines: LogLines
) -> None:
    assert stack.clinic is not None
    warnings = Recorder()
    async with CuttableLink(f"127.0.0.1:{stack.clinic.port}") as link:
        link.cut()
        sink = trails.clinic(f"http://{link.origin}")
        trail = await trails.trail(sink)
        for number in range(200):  # about 90 KB of events the sink cannot take
            await trail.record(kiosk_event(number, stack.organization_id))
        policy = RetentionPolicy(undelivered_limit_bytes=64 * 1024)
        retention = Retention(trail, outbox, tmp_path / "consultation", policy, on_warning=warnings)
        try:
            report = await retention.prune_now()
            assert report.warning is not None
            assert report.warning.startswith("undelivered data over the limit (")
            assert " KB of 64 KB: 200 audit records the sink has not acknowledged, 0 outbox items)" in (
                report.warning
            )
            assert report.warning.endswith("kept, never deleted undelivered")
            assert retention.warning == report.warning
            assert warnings.items == [report.warning]
            await log_lines.wait_line("storage warning: undelivered data over the limit")
            assert (trail.status().records, trail.status().pruned) == (200, 0)
            await retention.prune_now()
            assert warnings.items == [report.warning]  # told once, logged at every pass

            link.restore()
            assert await trail.wait_delivered(WAIT)
            report = await retention.prune_now()
            assert (report.warning, retention.warning) == (None, None)
            assert warnings.items[-1] is None
            await log_lines.wait_line("storage warning cleared")
        finally:
            await retention.aclose()


async def test_the_first_pass_runs_at_start_and_the_task_ends_at_close(
    trails: Trails, outbox: Outbox, tmp_path: Path, log_lines: LogLines
) -> None:
    consultations = tmp_path / "consultation"
    state_file.save(consultations, ended("dr-lee", "pt-1", "pt-1"))
    trail = await trails.trail(None)
    retention = Retention(trail, outbox, consultations, RetentionPolicy(), clock=month_on)
    retention.start()
    try:
        await log_lines.wait_line("retention pass", "consultation_files=1")
        assert state_file.load(consultations) is None
        assert len(retention._tasks) == 1  # waiting for the next pass
    finally:
        await retention.aclose()
    assert len(retention._tasks) == 0


async def test_a_store_that_fails_its_step_does_not_keep_the_others_from_theirs(
    trails: Trails, outbox: Outbox, tmp_path: Path, log_lines: LogLines
) -> None:
    consultations = tmp_path / "consultation"
    state_file.save(consultations, ended("dr-lee", "pt-1", "pt-1"))
    await outbox.put(chat("never sent"))
    trail = await trails.trail(None)
    await trail.aclose()  # the audit store's step fails: its trail is closed
    retention = Retention(trail, outbox, consultations, RetentionPolicy(), clock=month_on)
    try:
        report = await retention.prune_now()
    finally:
        await retention.aclose()
    assert report.failed == ("audit store",)
    assert (report.outbox_expired, report.consultation_files) == (1, 1)
    assert report.warning == "retention pass failed for the audit store (see the log)"
    await log_lines.wait_line("retention step failed store=audit store error=RuntimeError")


# -- the agent -------------------------------------------------------------------------------------


@pytest.fixture
def notify(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    """systemd's notify socket, where the agent finds it: $NOTIFY_SOCKET."""
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.setblocking(False)
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    yield sock
    sock.close()


async def status_line(sock: socket.socket, starts: str, within: float = WAIT) -> str:
    """The first STATUS= the agent sends that starts with ``starts``."""

    async def receive() -> str:
        while True:
            for field in (await asyncio.get_running_loop().sock_recv(sock, 4096)).decode().split("\n"):
                if field.startswith(f"STATUS={starts}"):
                    return field.removeprefix("STATUS=")

    return await asyncio.wait_for(receive(), within)


async def test_the_agent_prunes_at_start_and_puts_an_old_backlog_in_its_status(
    relay: Relay, notify: socket.socket, tmp_path: Path, log_lines: LogLines
) -> None:
    settings = load_settings(
        environ={
            "TELEHEALTH_STATE_DIR": str(tmp_path / "state"),
            "TELEHEALTH_USER_ID": "kiosk-retention",
            "TELEHEALTH_ROLE": "patient",
            "TELEHEALTH_ORIGIN": relay.origin,
            "TELEHEALTH_SSL": "false",
            "TELEHEALTH_PUBLISH_KEY": bus_support.PUBLISH_KEY,
            "TELEHEALTH_SUBSCRIBE_KEY": bus_support.SUBSCRIBE_KEY,
            "TELEHEALTH_CIPHER_KEY": "retention-agent-cipher-key",
            "TELEHEALTH_API_ENABLED": "false",
        }
    )
    # What a kiosk left 40 days ago: its ended consultation's file, and an audit event the sink
    # never acknowledged (this development kiosk has no clinic: its trail is keyed by the cipher key).
    long_ago = time.time() - 40 * 86_400
    consultations = settings.state_dir / "consultation"
    state_file.save(consultations, ended("dr-lee", "pt-1", "kiosk-retention"))
    os.utime(state_file.path_of(consultations), (long_ago, long_ago))
    trail = AuditTrail(
        settings.state_dir,
        keys=ChainKeys("retention-agent-cipher-key"),
        device_id="kiosk-retention",
        organization_id=settings.organization_id,
        sink=None,
    )
    await trail.open()
    event = kiosk_event(
        0, settings.organization_id, actor_id="kiosk-retention", resource_id="kiosk-retention"
    )
    await trail.record(event.model_copy(update={"timestamp": datetime.now(UTC) - timedelta(days=40)}))
    await trail.aclose()

    agent = Agent(settings)
    try:
        assert await agent.start() == "idle"
        status = await status_line(notify, "idle; storage: ")
        assert status.startswith("idle; storage: the audit sink has not acknowledged records since ")
        await log_lines.wait_line("retention pass", "consultation_files=1")
        assert state_file.load(consultations) is None
        assert agent.status == status
    finally:
        await agent.aclose()
    assert agent.retention is None
