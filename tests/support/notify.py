"""What a ``telehealth-agent run`` process tells systemd, read from the datagram socket bound as
its ``NOTIFY_SOCKET`` (``tests.support.cli.notify_socket``), and what a test needs around it.

``await status_containing(sock, fragment, within)``: the first ``STATUS=`` value holding
``fragment`` from now on; ``pending(sock)``: every datagram already queued, as field lists;
``free_port()``: a loopback TCP port nothing listens on now; ``Agents``: the run processes a test
started, each killed at its end if still running; ``waiting_environment(...)``: the settings of an
agent whose clinic is at a port of the test's choosing (down until the test listens there);
``under_systemd(tmp_path, settings)``: a notify socket bound and the settings that name it.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Iterator
from pathlib import Path

from telehealth_devstack.stack import DevStack
from tests.support.cli import AGENT, Process, clean_environment, notify_socket


async def status_containing(sock: socket.socket, fragment: str, within: float = 30.0) -> str:
    """The first ``STATUS=`` value that holds ``fragment`` (earlier datagrams are passed over)."""
    loop = asyncio.get_running_loop()

    async def receive() -> str:
        while True:
            for field in (await loop.sock_recv(sock, 4096)).decode().split("\n"):
                if field.startswith("STATUS=") and fragment in field:
                    return field.removeprefix("STATUS=")

    return await asyncio.wait_for(receive(), within)


def pending(sock: socket.socket) -> list[list[str]]:
    """The datagrams queued on ``sock`` now (it is non-blocking), each as its fields."""
    found = []
    while True:
        try:
            found.append(sock.recv(4096).decode().split("\n"))
        except BlockingIOError:
            return found


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class Agents:
    def __init__(self) -> None:
        self._started: list[Process] = []

    async def run(self, env: dict[str, str]) -> Process:
        """``telehealth-agent run`` with exactly ``env``."""
        process = await Process.spawn(*AGENT, "run", env=env)
        self._started.append(process)
        return process

    async def aclose(self) -> None:
        for process in self._started:
            await process.kill()


def waiting_environment(
    stack: DevStack, user: str, *, clinic_port: int, api_port: int, api_token: str, notify: Path
) -> dict[str, str]:
    """``user``'s settings on ``stack`` with its clinic at ``clinic_port`` and its API on
    ``api_port``, media off, retries at most a second apart (a test waits for them), and systemd's
    ``NOTIFY_SOCKET`` at ``notify``."""
    return clean_environment(
        {
            **stack.agent_environment(user),
            "TELEHEALTH_CLINIC_URL": f"http://127.0.0.1:{clinic_port}",
            "TELEHEALTH_API_TOKEN": api_token,
            "TELEHEALTH_API_PORT": str(api_port),
            "TELEHEALTH_MEDIA": "false",
            "TELEHEALTH_RECONNECT_MAX_SECONDS": "1",
            "NOTIFY_SOCKET": str(notify),
        }
    )


@contextlib.contextmanager
def under_systemd(tmp_path: Path, settings: dict[str, str]) -> Iterator[tuple[socket.socket, dict[str, str]]]:
    """A ``NOTIFY_SOCKET`` bound in ``tmp_path`` (closed at the end) and ``settings`` naming it, in
    an environment otherwise clean of the caller's."""
    notify_path = tmp_path / "notify.sock"
    with notify_socket(notify_path) as notify:
        yield notify, clean_environment({**settings, "NOTIFY_SOCKET": str(notify_path)})
