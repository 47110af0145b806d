"""The ``telehealth-agent`` command as a child process whose stdout lines can be awaited."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
import tempfile
from pathlib import Path

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


def clean_environment(extra: dict[str, str]) -> dict[str, str]:
    base = {key: value for key, value in os.environ.items() if not key.startswith("TELEHEALTH_")}
    base.pop("NOTIFY_SOCKET", None)
    return {**base, "TELEHEALTH_STATE_DIR": tempfile.mkdtemp(dir=STATE_ROOT.name), **extra}


async def notified(sock: socket.socket, field: bytes, within: float = 10.0) -> list[bytes]:
    """Wait for a datagram on the notify socket that carries ``field``; return all its fields."""

    async def receive() -> list[bytes]:
        while field not in (fields := (await asyncio.get_running_loop().sock_recv(sock, 4096)).split(b"\n")):
            pass
        return fields

    return await asyncio.wait_for(receive(), within)


def notify_socket(path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.setblocking(False)
    return sock


STATE_ROOT = tempfile.TemporaryDirectory(prefix="telehealth-cli-tests-")
