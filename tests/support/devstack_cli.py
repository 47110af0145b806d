"""``telehealth-agent devstack`` as a child process: its printed settings and a clean stop
(used by the devstack CLI tests and the API's CLI tests)."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator

from tests.support.cli import AGENT, Process


class Devstack(Process):
    """A ``devstack`` child process: its printed settings, and a clean stop."""

    line_timeout = 60.0
    finish_timeout = 30.0

    async def stop(self) -> None:
        self.proc.send_signal(signal.SIGINT)
        code, _, err = await self.finish()
        assert code == 0, err

    def kiosk_settings(self) -> dict[str, str]:
        return dict(line.strip().split("=", 1) for line in self.lines if line.startswith("TELEHEALTH_"))

    def provider_settings(self, user_id: str) -> dict[str, str]:
        (comment,) = [line for line in self.lines if line.startswith(f"# provider {user_id}'s agent:")]
        return {
            **self.kiosk_settings(),
            **dict(word.split("=", 1) for word in comment.split() if "=" in word),
        }


def _environment() -> dict[str, str]:
    base = {key: value for key, value in os.environ.items() if not key.startswith("TELEHEALTH_")}
    base.pop("NOTIFY_SOCKET", None)
    return base


async def devstack(started: list[Devstack], *args: str) -> Devstack:
    proc = await asyncio.create_subprocess_exec(
        *AGENT,
        "devstack",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=_environment(),
    )
    process = Devstack(proc)
    started.append(process)
    return process


async def running(started: list[Devstack], *args: str) -> Devstack:
    process = await devstack(started, *args)
    await process.wait_for_line("# state directory:")
    return process


async def started_devstacks() -> AsyncIterator[list[Devstack]]:
    """Every devstack a test starts; any still running afterwards is killed (a fixture's body)."""
    processes: list[Devstack] = []
    yield processes
    for process in processes:
        if process.proc.returncode is None:
            process.proc.kill()
            await process.proc.wait()
