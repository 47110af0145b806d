"""The ``telehealth-agent`` command as a child process whose stdout lines can be awaited."""

from __future__ import annotations

import asyncio
import sys

AGENT = [sys.executable, "-m", "telehealth_client"]


class Process:
    """A child process whose stdout lines can be awaited one fragment at a time."""

    line_timeout = 20.0
    finish_timeout = 20.0

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: list[str] = []

    async def wait_for_line(self, fragment: str, within: float | None = None) -> str:
        async def read() -> str:
            assert self.proc.stdout is not None
            while True:
                raw = await self.proc.stdout.readline()
                if not raw:
                    raise AssertionError(
                        f"process ended before {fragment!r}; output:\n" + "".join(self.lines)
                    )
                line = raw.decode()
                self.lines.append(line)
                if fragment in line:
                    return line

        return await asyncio.wait_for(read(), within or self.line_timeout)

    async def finish(self, within: float | None = None) -> tuple[int, str, str]:
        out, err = await asyncio.wait_for(self.proc.communicate(), within or self.finish_timeout)
        return self.proc.returncode or 0, "".join(self.lines) + out.decode(), err.decode()
