"""Restart: the patient agent, a real process, is SIGKILLed while waiting and again while in
progress; started again on the same state directory it resumes (fresh token, same subscriptions,
catch-up from the saved timetoken) and applies every message published meanwhile once, in order."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from telehealth_client.consultation import state_file
from telehealth_client.protocol.messages import ConsultationState as S
from telehealth_client.protocol.messages import QueueUpdate

from .conftest import (
    APPOINTMENT,
    CONSULTATION,
    DEPARTMENT,
    KIOSK,
    PATIENT,
    PROVIDER,
    Parts,
    RecordingHub,
)

pytestmark = pytest.mark.integration

HARNESS = Path(__file__).with_name("agent_process.py")
ROOT = Path(__file__).resolve().parents[3]


class AgentProcess:
    """The harness process: commands in, JSON lines out, read by a task this object owns."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.lines: list[dict[str, Any]] = []
        self._changed = asyncio.Event()
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def start(cls, environment: dict[str, str]) -> AgentProcess:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.integration.consultation.agent_process",
            cwd=ROOT,
            env={**os.environ, **environment},
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
        )
        return cls(process)

    async def _read(self) -> None:
        assert self.process.stdout is not None
        while line := await self.process.stdout.readline():
            self.lines.append(json.loads(line))
            self._changed.set()

    async def wait_line(
        self, matches: Callable[[dict[str, Any]], bool], within: float = 30.0
    ) -> dict[str, Any]:
        async def found() -> dict[str, Any]:
            while True:
                for line in self.lines:
                    if matches(line):
                        return line
                self._changed.clear()
                await self._changed.wait()

        return await asyncio.wait_for(found(), within)

    async def wait_state(self, state: S) -> dict[str, Any]:
        return await self.wait_line(
            lambda line: line.get("event") == "state-changed" and line["state"] == state
        )

    async def wait_saved(self, changed: dict[str, Any]) -> None:
        """Until the state file covers a ``state-changed`` line: the point a restart resumes from.

        The checkpoint is written just behind the transition it follows (consultation/checkpoint.py);
        a kill before it lands resumes from the one before and applies that message again.
        """
        await self.wait_line(
            lambda line: line.get("event") == "state-saved" and line["timetoken"] >= changed["timetoken"]
        )

    async def command(self, cmd: str, **fields: Any) -> dict[str, Any]:
        assert self.process.stdin is not None

        def replies() -> list[dict[str, Any]]:
            return [line for line in self.lines if line.get("reply") == cmd]

        asked = len(replies())
        self.process.stdin.write((json.dumps({"cmd": cmd, **fields}) + "\n").encode())
        await self.process.stdin.drain()
        await self.wait_line(lambda _: len(replies()) > asked)
        return replies()[asked]

    def events(self, kind: str) -> list[dict[str, Any]]:
        return [line for line in self.lines if line.get("event") == kind]

    async def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        await self.process.wait()
        await self._reader

    async def stop(self) -> None:
        if self.process.returncode is None:
            assert self.process.stdin is not None
            self.process.stdin.close()
            try:
                await asyncio.wait_for(self.process.wait(), 15)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()
        await self._reader


@pytest.fixture
async def launch(parts: Parts, tmp_path: Path) -> AsyncIterator[Callable[[], Any]]:
    environment = {
        **parts.stack.agent_environment(),
        "TELEHEALTH_USER_ID": KIOSK,
        "TELEHEALTH_ROLE": "patient",
        "TELEHEALTH_STATE_DIR": str(tmp_path / "kiosk-state"),
        "TELEHEALTH_RECONNECT_MAX_SECONDS": "1",
    }
    started: list[AgentProcess] = []

    async def start() -> AgentProcess:
        agent = await AgentProcess.start(environment)
        started.append(agent)
        await agent.wait_line(lambda line: line.get("event") == "started")
        return agent

    yield start
    for agent in started:
        await agent.stop()


def queue_update(position: int, minutes: int) -> QueueUpdate:
    return QueueUpdate(
        title="Queue Update",
        body="",
        priority="normal",
        timestamp=datetime.now(UTC),
        consultation_id=CONSULTATION,
        position=position,
        estimated_wait_minutes=minutes,
    )


async def test_a_killed_patient_agent_resumes_and_applies_what_it_missed_once(
    parts: Parts, launch: Callable[[], Any], tmp_path: Path
) -> None:
    provider_hub = RecordingHub()
    provider = await parts.provider(provider_hub)
    await parts.record_consent()

    first: AgentProcess = await launch()
    assert first.events("started")[0]["status"] == "idle"
    reply = await first.command(
        "check-in", appointmentId=APPOINTMENT, patientId=PATIENT, providerId=PROVIDER, departmentId=DEPARTMENT
    )
    assert reply["ok"], reply
    await provider_hub.wait_state(S.CHECKED_IN)
    session = provider.session(CONSULTATION)
    await session.act(queue_update(4, 30))
    await first.wait_saved(await first.wait_state(S.WAITING))

    # Killed while waiting: two queue updates and the join are published while it is down.
    await first.kill()
    for position, minutes in ((3, 20), (2, 10)):
        await session.act(queue_update(position, minutes))
    await provider.join(CONSULTATION)

    second: AgentProcess = await launch()
    assert second.events("started")[0]["status"].startswith("consultation connecting")
    await second.wait_state(S.CONNECTING)  # events reach stdout after "started"
    queue = [(e["position"], e["estimated_wait_minutes"]) for e in second.events("queue-updated")]
    assert queue == [(3, 20), (2, 10)]
    assert [(e["previous"], e["state"]) for e in second.events("state-changed")] == [
        ("waiting", "connecting")
    ]
    status = await second.command("status")
    assert (status["state"], status["queuePosition"]) == ("connecting", 2)

    # Killed while in progress: wrap-up is published while it is down.
    await provider.start_consultation(CONSULTATION)
    await second.wait_saved(await second.wait_state(S.IN_PROGRESS))
    await second.kill()
    await provider.wrap_up(CONSULTATION)

    third: AgentProcess = await launch()
    await third.wait_state(S.WRAPPING_UP)
    assert [(e["previous"], e["state"]) for e in third.events("state-changed")] == [
        ("in-progress", "wrapping-up")
    ]
    assert third.events("queue-updated") == []
    await provider.end(CONSULTATION, follow_up_required=False)
    await third.wait_state(S.COMPLETED)
    await third.wait_line(lambda line: line.get("event") == "idle")
    assert [e["state"] for e in third.events("state-changed")] == ["wrapping-up", "completed"]
    assert state_file.load(tmp_path / "kiosk-state" / "consultation") is None
    assert (await third.command("status"))["idle"] is True
