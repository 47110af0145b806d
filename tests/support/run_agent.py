"""``telehealth-agent run`` as a process, as kiosk.service runs it, driven through its local API:
``RunAgent`` (start to READY on its own notify socket, SIGTERM, SIGKILL and start again, an API
call, ``GET /v1/status`` until a condition holds) and what ``/proc`` says of a process tree
(``rss_mb``, ``descendants``). Shared by scripts/bench_agent.py and the soak (tests/support/soak)."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp

from tests.support.cli import Process, notified, notify_socket
from tests.support.devstack_cli import api_address

READY_WITHIN = 60.0  # a first start on a shared 2-core machine (imports from a cold cache)
STOP_WITHIN = 60.0  # past the unit's TimeoutStopSec=20s: the number is measured, not capped
POLL_SECONDS = 0.1


def agent_command() -> list[str]:
    """``telehealth-agent run``: the console script beside this Python, as the unit runs it."""
    script = Path(sys.executable).with_name("telehealth-agent")
    return [str(script), "run"] if script.exists() else [sys.executable, "-m", "telehealth_client", "run"]


def rss_mb(pid: int) -> float:
    """The resident memory of ``pid`` in MiB (0 once it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (its media children and theirs)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                # The command name may hold spaces and parentheses: the fields follow the last ")".
                parents[int(entry.name)] = int((entry / "stat").read_text().rpartition(")")[2].split()[1])
    found: list[int] = []
    frontier = [pid]
    while frontier:
        parent = frontier.pop()
        children = [child for child, its_parent in parents.items() if its_parent == parent]
        found += children
        frontier += children
    return found


class RunAgent:
    """One ``telehealth-agent run`` process: its notify socket, its API; started again after a kill
    on the same settings and state directory, as systemd restarts the unit."""

    def __init__(self, user_id: str, environment: dict[str, str], directory: Path) -> None:
        self.user_id = user_id
        self.notify_path = directory / f"notify-{user_id}.sock"
        self.environment = {**environment, "NOTIFY_SOCKET": str(self.notify_path)}
        self.process: Process | None = None
        self.base = ""
        self.headers = {"Authorization": f"Bearer {environment['TELEHEALTH_API_TOKEN']}"}

    async def start(self) -> float:
        """Spawn it; the seconds until its READY=1 datagram."""
        with contextlib.suppress(FileNotFoundError):
            self.notify_path.unlink()
        with notify_socket(self.notify_path) as sock:
            started = time.monotonic()
            self.process = await Process.spawn(*agent_command(), env=self.environment)
            await notified(sock, b"READY=1", within=READY_WITHIN)
            ready = time.monotonic() - started
        self.base = await api_address(self.process)
        return ready

    async def stop(self) -> tuple[float, int]:
        """SIGTERM; the seconds until it exited, and its exit code."""
        assert self.process is not None
        started = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        code = await self.process.exited(STOP_WITHIN)
        elapsed = time.monotonic() - started
        await self.process.finish()
        return elapsed, code

    async def kill(self) -> None:
        if self.process is not None:
            await self.process.kill()

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.process.returncode is None

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.process.pid

    async def call(self, http: aiohttp.ClientSession, method: str, path: str, body: Any = None) -> Any:
        async with http.request(method, self.base + path, json=body, headers=self.headers) as answer:
            data = await answer.json()
            if answer.status >= 300:
                raise RuntimeError(f"{self.user_id}: {method} {path}: {answer.status} {data}")
            return data

    async def until(
        self, http: aiohttp.ClientSession, holds: Callable[[dict[str, Any]], bool], what: str, within: float
    ) -> dict[str, Any]:
        """``GET /v1/status`` until ``holds`` (what the other agent learns over PubNub)."""
        status: dict[str, Any] = await self.poll(http, "/v1/status", holds, what, within)
        return status

    async def poll(
        self,
        http: aiohttp.ClientSession,
        path: str,
        holds: Callable[[Any], bool],
        what: str,
        within: float,
    ) -> Any:
        """``GET path`` until its answer ``holds``; TimeoutError naming ``what`` otherwise."""
        deadline = time.monotonic() + within
        while True:
            answer = await self.call(http, "GET", path)
            if holds(answer):
                return answer
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.user_id}: never {what} within {within} s")
            await asyncio.sleep(POLL_SECONDS)  # a poll's period, as the README's wait_for
