"""A real Agent in a child process (``tests/support/agent_harness.py``), driven from a test.

``await AgentChild.start(environment, logs=..., debug=False)`` starts the harness with
``environment`` over this process's, waits for its ``started`` line and returns it; ``logs``:
where its stderr goes (``DEVNULL``, a file, or ``PIPE`` to keep it in ``stderr``). A reader task it
owns parses every stdout line into ``lines``; ``await wait_line(matches, within=...)`` returns the
first line that matches (``wait_event(kind, **fields)``, ``wait_state(state)``, ``wait_saved(line)``
for the usual ones; an ``AssertionError`` with what it wrote if it ends first); ``events(kind)``
lists them so far; ``await command(cmd, **fields)`` sends one command and returns its reply
(``command_ok`` also asserts it succeeded); ``await kill()`` SIGKILLs it; ``await stop()`` closes
its stdin (the harness closes its agent and exits) and kills it if it does not exit in time.

``AgentChildren``: the children a test started, each stopped at the end (``agent_children``
fixture, ``tests/integration/conftest.py``); ``launcher(environment)`` starts one more on each call.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import IO, Any

from telehealth_client.protocol.messages import ConsultationState
from tests.support.recorder import Recorder

ROOT = Path(__file__).resolve().parents[2]
HARNESS = "tests.support.agent_harness"
WAIT = 30.0
STOP_WAIT = 30.0

Line = dict[str, Any]


class AgentChild:
    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.recorder = Recorder()
        self.lines: list[Line] = self.recorder.items
        self.stdout: list[bytes] = []
        self.stderr: list[bytes] = []
        self._ended = False
        self._readers = [asyncio.create_task(self._read_stdout())]
        if process.stderr is not None:
            self._readers.append(asyncio.create_task(self._read_stderr()))

    @classmethod
    async def start(
        cls,
        environment: dict[str, str],
        *,
        logs: int | IO[bytes] = asyncio.subprocess.DEVNULL,
        debug: bool = False,
    ) -> AgentChild:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            HARNESS,
            *(["--debug"] if debug else []),
            cwd=ROOT,
            env={**os.environ, **environment},
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=logs,
        )
        child = cls(process)
        try:
            await child.wait_event("started")
        except BaseException:
            await child.kill()
            raise
        return child

    async def _read_stdout(self) -> None:
        assert self.process.stdout is not None
        try:
            while raw := await self.process.stdout.readline():
                self.stdout.append(raw)
                self.recorder.add(json.loads(raw))
        finally:
            self._ended = True
            self.recorder.changed()  # a waiter learns that no line will come

    async def _read_stderr(self) -> None:
        assert self.process.stderr is not None
        while raw := await self.process.stderr.readline():
            self.stderr.append(raw)

    async def wait_line(self, matches: Callable[[Line], bool], within: float = WAIT) -> Line:
        def found() -> bool:
            if any(matches(line) for line in self.lines):
                return True
            if self._ended:
                raise AssertionError(f"the agent's output ended; it wrote:\n{self.written().decode()}")
            return False

        await self.recorder.until(found, within)
        return next(line for line in self.lines if matches(line))

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
        assert self.process.stdin is not None

        def replies() -> list[Line]:
            return [line for line in self.lines if line.get("reply") == cmd]

        asked = len(replies())
        self.process.stdin.write((json.dumps({"cmd": cmd, **fields}) + "\n").encode())
        await self.process.stdin.drain()
        await self.wait_line(lambda _: len(replies()) > asked)
        return replies()[asked]

    async def command_ok(self, cmd: str, **fields: Any) -> Line:
        reply = await self.command(cmd, **fields)
        assert reply["ok"], reply
        return reply

    async def kill(self) -> None:
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGKILL)
        await self.process.wait()
        await asyncio.gather(*self._readers)

    async def stop(self, within: float = STOP_WAIT) -> None:
        if self.process.returncode is None:
            assert self.process.stdin is not None
            self.process.stdin.close()
            try:
                await asyncio.wait_for(self.process.wait(), within)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()
        await asyncio.gather(*self._readers)

    def written(self) -> bytes:
        """All it wrote on stdout, then all it wrote on stderr (when kept)."""
        return b"".join(self.stdout) + b"".join(self.stderr)


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

    def launcher(self, environment: dict[str, str]) -> Callable[[], Awaitable[AgentChild]]:
        """Starts one more child with ``environment`` each time it is called (a restart)."""
        return lambda: self.start(environment)

    async def aclose(self) -> None:
        for child in self.started:
            await child.stop()
