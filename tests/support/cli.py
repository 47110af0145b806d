"""The ``telehealth-agent`` command (and the tests' other scripts) as a child process whose stdout
lines can be awaited: ``Process``, a ``tests.support.child.Child`` of text lines; ``AGENT``, the
command; ``clean_environment`` (no ``TELEHEALTH_*`` of ours, a fresh state directory); the systemd
notify socket (``notify_socket``, ``notified``)."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
import tempfile
from pathlib import Path

from tests.support.child import Child

AGENT = [sys.executable, "-m", "telehealth_client"]
SYSTEMD_VARIABLES = frozenset({"NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"})


class Process(Child[str]):
    """A child whose stdout lines are text (each with its newline), read in order by ``next_line``."""

    line_timeout = 20.0
    finish_timeout = 20.0

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        super().__init__(process)
        self._read = 0  # lines before this index were passed over by next_line

    def parse(self, raw: bytes) -> str:
        return raw.decode()

    async def next_line(self, fragment: str, within: float | None = None) -> str:
        """The next line holding ``fragment`` after the one it returned last: a test reads
        repeated lines (one per item put, one per event recorded) one at a time, in order."""
        index = await self.wait_index(lambda line: fragment in line, within, start=self._read)
        self._read = index + 1
        return self.lines[index]


def unset_environment() -> dict[str, str]:
    """This process's environment without a ``TELEHEALTH_*`` setting or systemd's notify socket
    and watchdog: what a child is given before the settings a test means it to have."""
    return {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("TELEHEALTH_") and key not in SYSTEMD_VARIABLES
    }


def clean_environment(extra: dict[str, str]) -> dict[str, str]:
    """``unset_environment()`` with a fresh state directory, then ``extra``."""
    return {**unset_environment(), "TELEHEALTH_STATE_DIR": tempfile.mkdtemp(dir=STATE_ROOT.name), **extra}


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


async def watchdog_pings(sock: socket.socket, count: int, within: float = 10.0) -> list[float]:
    """The loop times at which the next ``count`` datagrams carrying ``WATCHDOG=1`` arrived."""
    loop = asyncio.get_running_loop()
    times: list[float] = []

    async def receive() -> None:
        while len(times) < count:
            if b"WATCHDOG=1" in (await loop.sock_recv(sock, 4096)).split(b"\n"):
                times.append(loop.time())

    await asyncio.wait_for(receive(), within)
    return times
