"""PHI canary through real agent processes: a patient kiosk agent and a provider cart agent
(``phi_agent.py``, each a real ``Agent`` with its settings from ``TELEHEALTH_*``) chat both ways
with read receipts, the provider escalates an emergency and resolves it, and ends the
consultation. Nothing either process wrote (stdout, and stderr with every log record at DEBUG),
no file of either state directory or of the stack, nothing the relay holds and nothing at the
audit sink carries a marker.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from telehealth_devstack.stack import DevStack

from ..audit.conftest import sink_events
from ..consultation.conftest import (
    APPOINTMENT,
    CONSULTATION,
    DEPARTMENT,
    KIOSK,
    PATIENT,
    PROVIDER,
    Parts,
)
from .conftest import Canary, audit_store_events, dumps, files_holding

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[3]
WAIT = 30.0

Line = dict[str, Any]


class AgentChild:
    """The harness process: commands in; JSON lines from stdout and text from stderr kept whole."""

    harness = "tests.integration.phi.phi_agent"

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.lines: list[Line] = []
        self.stdout: list[bytes] = []
        self.stderr: list[bytes] = []
        self._changed = asyncio.Event()
        self._readers = [asyncio.create_task(self._read_stdout()), asyncio.create_task(self._read_stderr())]

    @classmethod
    async def start(cls, environment: dict[str, str]) -> AgentChild:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            cls.harness,
            cwd=ROOT,
            env={**os.environ, **environment},
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        child = cls(process)
        await child.wait_line(lambda line: line.get("event") == "started")
        return child

    async def _read_stdout(self) -> None:
        assert self.process.stdout is not None
        while raw := await self.process.stdout.readline():
            self.stdout.append(raw)
            self.lines.append(json.loads(raw))
            self._changed.set()

    async def _read_stderr(self) -> None:
        assert self.process.stderr is not None
        while raw := await self.process.stderr.readline():
            self.stderr.append(raw)

    async def wait_line(self, matches: Callable[[Line], bool], within: float = WAIT) -> Line:
        async def found() -> Line:
            while True:
                for line in self.lines:
                    if matches(line):
                        return line
                self._changed.clear()
                await self._changed.wait()

        return await asyncio.wait_for(found(), within)

    async def wait_event(self, kind: str, **fields: Any) -> Line:
        return await self.wait_line(
            lambda line: line.get("event") == kind and all(line.get(k) == v for k, v in fields.items())
        )

    async def command(self, cmd: str, **fields: Any) -> Line:
        assert self.process.stdin is not None

        def replies() -> list[Line]:
            return [line for line in self.lines if line.get("reply") == cmd]

        asked = len(replies())
        self.process.stdin.write((json.dumps({"cmd": cmd, **fields}) + "\n").encode())
        await self.process.stdin.drain()
        await self.wait_line(lambda _: len(replies()) > asked)
        reply = replies()[asked]
        assert reply["ok"], reply
        return reply

    async def stop(self) -> None:
        """Close stdin: the harness closes its agent and exits; killed if it does not."""
        if self.process.returncode is None:
            assert self.process.stdin is not None
            self.process.stdin.close()
            try:
                await asyncio.wait_for(self.process.wait(), WAIT)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()
        await asyncio.gather(*self._readers)

    def written(self) -> bytes:
        return b"".join(self.stdout) + b"".join(self.stderr)


@pytest.fixture
async def children() -> AsyncIterator[list[AgentChild]]:
    started: list[AgentChild] = []
    yield started
    for child in started:
        await child.stop()


async def test_marker_phi_stays_out_of_what_agent_processes_write_and_keep(
    kept_parts: Parts, kept_stack: DevStack, tmp_path: Path, children: list[AgentChild]
) -> None:
    stack = kept_stack
    asked = Canary.make("My daughter's name is on file, the code she gave me is {marker}")
    answered = Canary.make("I see a rash in your chart note {marker}, when did it start?")
    reason = Canary.make("Anaphylaxis suspected after penicillin {marker}, airway swelling")
    resolution = Canary.make("Epinephrine given, stable, note {marker}")
    canaries = [asked, answered, reason, resolution]
    agents_dir = tmp_path / "processes"
    provider_dir, kiosk_dir = agents_dir / PROVIDER, agents_dir / KIOSK
    common = {"TELEHEALTH_RECONNECT_MAX_SECONDS": "1"}

    provider = await AgentChild.start(
        {**stack.agent_environment(PROVIDER), **common, "TELEHEALTH_STATE_DIR": str(provider_dir)}
    )
    children.append(provider)
    await kept_parts.record_consent()
    kiosk_environment = {
        **stack.agent_environment(),
        **common,
        "TELEHEALTH_USER_ID": KIOSK,
        "TELEHEALTH_ROLE": "patient",
        "TELEHEALTH_STATE_DIR": str(kiosk_dir),
    }
    kiosk = await AgentChild.start(kiosk_environment)
    children.append(kiosk)

    await kiosk.command(
        "check-in", appointmentId=APPOINTMENT, patientId=PATIENT, providerId=PROVIDER, departmentId=DEPARTMENT
    )
    await provider.wait_event("state-changed", consultation_id=CONSULTATION, state="checked-in")
    await provider.command("join", consultationId=CONSULTATION)
    await kiosk.wait_event("state-changed", consultation_id=CONSULTATION, state="connecting")

    await kiosk.command("chat", text=asked.sentence)
    await provider.wait_event("chat-message", sender_id=PATIENT)
    await provider.command("chat", consultationId=CONSULTATION, text=answered.sentence)
    await kiosk.wait_event("chat-message", sender_id=PROVIDER)
    await kiosk.command("read")
    await provider.command("read", consultationId=CONSULTATION)
    await provider.wait_event("chat-read", reader_id=PATIENT)
    await kiosk.wait_event("chat-read", reader_id=PROVIDER)

    escalation = await provider.command(
        "escalate", consultationId=CONSULTATION, severity="life-threatening", reason=reason.sentence
    )
    await provider.wait_event("emergency", escalation_id=escalation["id"], delivered=True)
    # During the consultation: the open escalation is kept (sealed) in the provider's state.
    assert await asyncio.to_thread(files_holding, tmp_path, canaries) == []
    await provider.command("resolve", id=escalation["id"], resolution=resolution.sentence)
    await provider.wait_event("emergency", escalation_id=escalation["id"], status="resolved")
    assert (await provider.command("drained"))["outbox"]
    await provider.command("end", consultationId=CONSULTATION, followUpRequired=True)
    await kiosk.wait_event("chat-wiped", consultation_id=CONSULTATION)
    await provider.wait_event("chat-wiped", consultation_id=CONSULTATION)
    for child in (kiosk, provider):
        drained = await child.command("drained")
        assert drained["outbox"] and drained["audit"], drained
        await child.stop()

    # Everything each process wrote: its JSON lines and every log record at DEBUG.
    for child in (kiosk, provider):
        written = child.written()
        assert b"level=debug" in written and b"emergency" in b"".join(provider.stderr)
        assert [c.marker for c in canaries if c.in_bytes(written)] == []
    # Every file either agent or the stack kept, and what the relay and the sink hold.
    assert await asyncio.to_thread(files_holding, tmp_path, canaries) == []
    assert [c.marker for c in canaries if c.in_text(stack.relay.dump_text())] == []
    at_sink = await sink_events(stack)
    assert "EMERGENCY_ESCALATION_TRIGGERED" in {e["eventType"] for e in at_sink}
    assert [c.marker for c in canaries if c.in_text(dumps(at_sink))] == []
    for state_dir in (kiosk_dir, provider_dir):
        stored = await asyncio.to_thread(audit_store_events, state_dir)
        assert stored and [c.marker for c in canaries if c.in_text("\n".join(stored))] == []
