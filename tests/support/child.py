"""A child process driven from a test: the one harness under ``AgentChild`` (``agent_child.py``, a
real Agent), ``Process`` (``cli.py``, the ``telehealth-agent`` command and other scripts) and
``JsPeer`` (``interop.py``, the PubNub JavaScript SDK in Node).

``Child`` owns the process, a reader task per piped output and the ``Recorder`` its stdout lines
go into as they come (``parse`` makes each line an item: text for ``Process``, JSON for
``AgentChild``), so nothing it writes waits on the test to read it. ``await spawn(*argv, env=...,
cwd=..., stdin=False, stderr=PIPE)`` starts one; ``lines`` (the recorder's items), ``stdout`` and
``stderr`` (raw lines, ``stderr`` when piped) and ``written()`` hold what it wrote so far.

``await wait_line(matches, within=..., start=0)`` returns the first line from index ``start`` on
that matches (``wait_index`` its index), or raises ``AssertionError`` with all it wrote once its
stdout ends without one. ``await write(data)`` writes to its stdin; ``send_signal(signal)``;
``await exited(within)`` waits for its exit code; ``await finish(within)`` closes its stdin, waits
for it to exit and returns ``(code, stdout, stderr)`` as text; ``await kill()`` SIGKILLs it;
``await stop(within)`` closes its stdin and kills it if it does not exit in time. Each of the last
three also waits for the readers, so ``lines`` then holds everything it wrote.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable
from pathlib import Path
from typing import IO, Generic, Self, TypeVar

from tests.support.recorder import Recorder

PIPE = asyncio.subprocess.PIPE
T = TypeVar("T")


class Child(Generic[T]):
    line_timeout = 30.0  # seconds; a class may change its own
    finish_timeout = 30.0
    line_limit = 2**16  # bytes in one stdout line at the most (asyncio's default); a class may raise it

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.recorder = Recorder()
        self.lines: list[T] = self.recorder.items
        self.stdout: list[bytes] = []
        self.stderr: list[bytes] = []
        self._ended = False
        self._readers = [asyncio.create_task(self._read_stdout())]
        if process.stderr is not None:
            self._readers.append(asyncio.create_task(self._read_stderr()))

    @classmethod
    async def spawn(
        cls,
        *argv: str | Path,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
        stdin: bool = False,
        stderr: int | IO[bytes] = PIPE,
    ) -> Self:
        """Start ``argv`` with its stdout piped (and stdin, when asked); ``env`` None: ours."""
        process = await asyncio.create_subprocess_exec(
            *argv,
            cwd=cwd,
            env=env,
            stdin=PIPE if stdin else None,
            stdout=PIPE,
            stderr=stderr,
            limit=cls.line_limit,
        )
        return cls(process)

    def parse(self, raw: bytes) -> T:
        """One stdout line as the item recorded for it."""
        raise NotImplementedError

    async def _read_stdout(self) -> None:
        assert self.process.stdout is not None
        try:
            while raw := await self.process.stdout.readline():
                self.stdout.append(raw)
                self.recorder.add(self.parse(raw))
        finally:
            self._ended = True
            self.recorder.changed()  # a waiter learns that no line will come

    async def _read_stderr(self) -> None:
        assert self.process.stderr is not None
        while raw := await self.process.stderr.readline():
            self.stderr.append(raw)

    def written(self) -> bytes:
        """All it wrote on stdout, then all it wrote on stderr (when piped)."""
        return b"".join(self.stdout) + b"".join(self.stderr)

    async def wait_index(
        self, matches: Callable[[T], bool], within: float | None = None, *, start: int = 0
    ) -> int:
        """The index of the first line from ``start`` on that ``matches``, once it came."""
        position = start

        def found() -> bool:
            nonlocal position
            while position < len(self.lines):
                if matches(self.lines[position]):
                    return True
                position += 1
            if self._ended:
                written = self.written().decode(errors="replace")
                raise AssertionError(f"the process's output ended; it wrote:\n{written}")
            return False

        await self.recorder.until(found, within or self.line_timeout)
        return position

    async def wait_line(
        self, matches: Callable[[T], bool], within: float | None = None, *, start: int = 0
    ) -> T:
        return self.lines[await self.wait_index(matches, within, start=start)]

    async def write(self, data: bytes) -> None:
        assert self.process.stdin is not None, "spawned without stdin"
        self.process.stdin.write(data)
        await self.process.stdin.drain()

    def send_signal(self, sig: signal.Signals) -> None:
        self.process.send_signal(sig)

    async def exited(self, within: float | None = None) -> int:
        """Its exit code (negative: the signal that ended it) once it exited."""
        return await asyncio.wait_for(self.process.wait(), within or self.finish_timeout)

    async def _drained(self) -> None:
        await self.process.wait()
        await asyncio.gather(*self._readers)

    def _close_stdin(self) -> None:
        if self.process.stdin is not None and not self.process.stdin.is_closing():
            self.process.stdin.close()

    async def finish(self, within: float | None = None) -> tuple[int, str, str]:
        """Close its stdin, wait for it to exit: its exit code, all its stdout and its stderr."""
        self._close_stdin()
        try:
            await asyncio.wait_for(self._drained(), within or self.finish_timeout)
        except TimeoutError:
            await self.kill()
            written = self.written().decode(errors="replace")
            raise TimeoutError(f"the process did not exit in time (killed); it wrote:\n{written}") from None
        assert self.process.returncode is not None
        return self.process.returncode, b"".join(self.stdout).decode(), b"".join(self.stderr).decode()

    async def kill(self) -> None:
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGKILL)
        await self._drained()

    async def stop(self, within: float | None = None) -> None:
        if self.process.returncode is None:
            self._close_stdin()
            try:
                await asyncio.wait_for(self.process.wait(), within or self.finish_timeout)
            except TimeoutError:
                self.process.kill()
        await self._drained()
