"""``telehealth-agent devstack`` as a child process: its printed settings and a clean stop
(used by the devstack CLI tests and the API's CLI tests); the settings files it writes, read
(``written_settings``) or sourced by a shell that runs an agent (``sourced_agent``)."""

from __future__ import annotations

import re
import shlex
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp

from tests.support.cli import AGENT, Process, unset_environment

STATE_LINE = "# state directory: "
SETTING = re.compile(r"[A-Z][A-Z0-9_]*=")  # a setting's line, not a log line (ts=...)


class Devstack(Process):
    """A ``devstack`` child process: its printed settings, and a clean stop."""

    line_timeout = 60.0
    finish_timeout = 30.0

    async def stop(self, within: float | None = None) -> None:
        self.send_signal(signal.SIGINT)
        code, _, err = await self.finish(within)
        assert code == 0, err

    async def state_line(self) -> str:
        """The ``# state directory:`` line, printed once the stack is up."""
        return await self.wait_line(lambda line: line.startswith(STATE_LINE))

    def kiosk_settings(self) -> dict[str, str]:
        return dict(line.strip().split("=", 1) for line in self.lines if SETTING.match(line))

    def provider_settings(self, user_id: str) -> dict[str, str]:
        (comment,) = [line for line in self.lines if line.startswith(f"# provider {user_id}'s agent:")]
        return {
            **self.kiosk_settings(),
            **dict(word.split("=", 1) for word in comment.split() if "=" in word),
        }


async def devstack(started: list[Devstack], *args: str) -> Devstack:
    process = await Devstack.spawn(*AGENT, "devstack", *args, env=unset_environment())
    started.append(process)
    return process


async def running(started: list[Devstack], *args: str) -> Devstack:
    """A devstack, once it is up (it printed its state directory)."""
    process = await devstack(started, *args)
    await process.state_line()
    return process


async def started_devstacks() -> AsyncIterator[list[Devstack]]:
    """Every devstack a test starts; any still running afterwards is killed (a fixture's body)."""
    processes: list[Devstack] = []
    yield processes
    for process in processes:
        await process.kill()


def written_settings(path: Path) -> dict[str, str]:
    """A written settings file's ``NAME=value`` lines (comments left out), as a shell reads them."""
    lines = path.read_text(encoding="utf-8").splitlines()
    return {
        name: shlex.split(value)[0]
        for name, value in (line.split("=", 1) for line in lines if line and not line.startswith("#"))
    }


async def sourced_agent(settings_file: Path, **extra: str) -> Process:
    """``telehealth-agent run`` as a newcomer starts it: a shell sources ``settings_file`` (then
    ``extra``), nothing copied by hand."""
    overrides = " ".join(f"{name}={shlex.quote(value)}" for name, value in extra.items())
    command = " ".join(shlex.quote(word) for word in (*AGENT, "run"))
    script = f"set -a; . {shlex.quote(str(settings_file))}; set +a; {overrides} exec {command}"
    return await Process.spawn("bash", "-c", script, env=unset_environment())


async def api_address(agent: Process) -> str:
    """The local API's base URL, from the line the agent logs once it listens."""
    line = await agent.next_line("local api listening address=")
    match = re.search(r"address=(http://127\.0\.0\.1:\d+)", line)
    assert match, line
    return match.group(1)


async def with_env_file(started: list[Devstack], env_file: Path, *args: str) -> Devstack:
    """A devstack writing ``env_file`` (and each identity's beside it), once it has written them."""
    process = await devstack(started, *args, "--env-file", str(env_file))
    await process.next_line(f"# written to {env_file}")
    return process


async def api_status(base: str, token: str) -> dict[str, Any]:
    """An agent's ``GET /v1/status`` with its token (answered 200)."""
    async with (
        aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}"}) as session,
        session.get(f"{base}/v1/status") as answer,
    ):
        status: dict[str, Any] = await answer.json()
        assert answer.status == 200, status
        return status
