"""The README's curl walkthrough, run as written: a devstack, a kiosk and a provider agent started
from the files it wrote, then the README's block in bash; any command of it that fails fails this."""

from __future__ import annotations

import asyncio
import re
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.support.cli import Process, unset_environment
from tests.support.devstack_cli import Devstack, api_address, sourced_agent, started_devstacks, with_env_file

pytestmark = pytest.mark.integration

README = Path(__file__).resolve().parents[2] / "README.md"
MARKER = "<!-- curl walkthrough:"
WRITTEN_PREFIX = "/tmp/dev."  # the block reads the agents' files from there
WALKTHROUGH_WITHIN = 120.0  # a whole consultation with a call, on a shared 2-core machine
API_PORT = re.compile(r"^TELEHEALTH_API_PORT=\d+$", re.MULTILINE)


@pytest.fixture
async def started() -> AsyncIterator[list[Devstack]]:
    async for processes in started_devstacks():
        yield processes


def walkthrough(settings_prefix: str) -> str:
    """The README's block after the marker, reading the agents' files under ``settings_prefix``."""
    after = README.read_text(encoding="utf-8").split(MARKER, 1)[1]
    block = after.split("```sh\n", 1)[1].split("\n```", 1)[0]
    assert WRITTEN_PREFIX in block
    return block.replace(WRITTEN_PREFIX, settings_prefix)


def with_port(written: Path, copy: Path, port: str) -> None:
    copy.write_text(API_PORT.sub(f"TELEHEALTH_API_PORT={port}", written.read_text()))


async def test_the_readmes_curl_walkthrough_runs_a_whole_consultation(
    started: list[Devstack], tmp_path: Path
) -> None:
    env_file = tmp_path / "dev.env"
    stack = await with_env_file(started, env_file)
    walk = tmp_path / "walk"
    walk.mkdir()
    agents: list[Process] = []
    try:
        for user_id in ("kiosk-1", "dr-demo"):
            written = tmp_path / f"dev.{user_id}.env"
            # A free port, not the written 8470/8471 (other tests on this machine may hold them); the
            # block reads each agent's port from its file, so its copy names the port it listens on.
            agent = await sourced_agent(written, TELEHEALTH_API_PORT="0")
            agents.append(agent)
            port = (await api_address(agent)).rsplit(":", 1)[1]
            await asyncio.to_thread(with_port, written, walk / written.name, port)
        # The provider's cart follows its waiting room before the patient checks in, as in the README.
        await agents[1].wait_line(lambda line: "bus status=connected" in line)
        script = await asyncio.to_thread(walkthrough, f"{walk}/dev.")
        bash = await Process.spawn("bash", "-c", script, env=unset_environment())
        code, out, err = await bash.finish(WALKTHROUGH_WITHIN)
        assert code == 0, out + err
        assert '"followUpRequired": true' in out  # the summary
    finally:
        for agent in agents:
            agent.send_signal(signal.SIGTERM)
            await agent.finish()
    await stack.stop()
