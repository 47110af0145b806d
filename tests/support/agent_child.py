"""A real Agent in a child process (``tests/support/agent_harness.py``), driven from a test.

``await AgentChild.start(environment, logs=..., debug=False)`` starts the harness with
``environment`` over this process's, waits for its ``started`` line and returns it; ``logs``:
where its stderr goes (``DEVNULL``, a file, or ``PIPE`` to keep it in ``stderr``). It is a
``tests.support.child.Child`` whose stdout lines are JSON objects: ``wait_line(matches)``, with
``wait_event(kind, **fields)``, ``wait_state(state)``, ``wait_saved(line)`` for the usual ones;
``events(kind)`` lists them so far; ``await command(cmd, **fields)`` sends one command and returns
its reply (``command_ok`` also asserts it succeeded); ``await kill()`` SIGKILLs it; ``await
stop()`` closes its stdin (the harness closes its agent and exits) and kills it if it does not exit
in time.

``AgentChildren``: the children a test started, each stopped at the end (``agent_children``
fixture, ``tests/integration/conftest.py``). ``Launch``: the ``launch`` fixture's type there, which
starts the kiosk's or the provider's agent again on the same state directory (a restart).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Awaitable
from pathlib import Path
from typing import IO, Any, Protocol

from telehealth_client.protocol.messages import ConsultationState
from tests.support.child import Child

ROOT = Path(__file__).resolve().parents[2]
HARNESS = "tests.support.agent_harness"
WAIT = 30.0
STOP_WAIT = 30.0

Line = dict[str, Any]


class AgentChild(Child[Line]):
    """The harness's child: each stdout line a JSON object (an event or a command's reply)."""

    line_timeout = WAIT
    finish_timeout = STOP_WAIT

    @classmethod
    async def start(
        cls,
        environment: dict[str, str],
        *,
        logs: int | IO[bytes] = asyncio.subprocess.DEVNULL,
        debug: bool = False,
    ) -> AgentChild:
        child = await cls.spawn(
            sys.executable,
            "-m",
            HARNESS,
            *(["--debug"] if debug else []),
            cwd=ROOT,
            env={**os.environ, **environment},
            stdin=True,
            stderr=logs,
        )
        try:
            await child.wait_event("started")
        except BaseException:
            await child.kill()
            raise
        return child

    def parse(self, raw: bytes) -> Line:
        line: Line = json.loads(raw)
        return line

    async def wait_event(self, kind: str, **fields: Any) -> Line:
        return await self.wait_line(
            lambda line: line.get("event") == kind and all(line.get(k) == v for k, v in fields.items())
        )

    async def wait_state(self, state: ConsultationState) -> Line:
        return await self.wait_line(
            lambda line: line.get("event") == "state-changed" and line["state"] == state
        )

    async def wait_saved(self, changed: Line) -> None:
        """Until the state file covers a ``state-changed`` line: the point a restart resumes from.

        The checkpoint is written just behind the transition it follows (consultation/checkpoint.py);
        a kill before it lands resumes from the one before and applies that message again.
        """
        await self.wait_line(
            lambda line: line.get("event") == "state-saved" and line["timetoken"] >= changed["timetoken"]
        )

    def events(self, kind: str) -> list[Line]:
        return [line for line in self.lines if line.get("event") == kind]

    async def command(self, cmd: str, **fields: Any) -> Line:
        """Send one command; its reply (the first to ``cmd`` written after it was sent)."""
        asked = len(self.lines)
        await self.write((json.dumps({"cmd": cmd, **fields}) + "\n").encode())
        return await self.wait_line(lambda line: line.get("reply") == cmd, start=asked)

    async def command_ok(self, cmd: str, **fields: Any) -> Line:
        reply = await self.command(cmd, **fields)
        assert reply["ok"], reply
        return reply


class AgentChildren:
    """Starts agent children; ``aclose`` stops every one (in the order they started)."""

    def __init__(self) -> None:
        self.started: list[AgentChild] = []

    async def start(
        self,
        environment: dict[str, str],
        *,
        logs: int | IO[bytes] = asyncio.subprocess.DEVNULL,
        debug: bool = False,
    ) -> AgentChild:
        child = await AgentChild.start(environment, logs=logs, debug=debug)
        self.started.append(child)
        return child

    async def aclose(self) -> None:
        for child in self.started:
            await child.stop()


class Launch(Protocol):
    """Starts the kiosk's patient agent (or, with ``provider``, the provider's) once more."""

    def __call__(
        self, origin: str | None = None, log_name: str | None = None, *, provider: bool = False
    ) -> Awaitable[AgentChild]: ...
