"""``telehealth-agent run`` serves the local API: it logs where it listens (never the token), answers
on it, and stops it with the agent; without a token it does not start, naming the setting."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import stat
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from telehealth_client.config import load_settings
from telehealth_devstack.stack import DevStack
from tests.support.api import KIOSK
from tests.support.cli import AGENT, Process, unset_environment
from tests.support.devstack_cli import Devstack, devstack, started_devstacks

pytestmark = pytest.mark.integration


def environment(stack: DevStack, state_dir: Path, **extra: str) -> dict[str, str]:
    return {
        **unset_environment(),
        **stack.agent_environment(KIOSK),
        "TELEHEALTH_STATE_DIR": str(state_dir),
        **extra,
    }


async def start(env: dict[str, str]) -> Process:
    return await Process.spawn(*AGENT, "run", env=env)


async def test_run_serves_the_api_logs_its_address_and_never_the_token(
    stack: DevStack, tmp_path: Path
) -> None:
    env = environment(stack, tmp_path / "kiosk")
    token = env["TELEHEALTH_API_TOKEN"]
    agent = await start(env)
    line = await agent.next_line("local api listening address=")
    match = re.search(r"address=(http://127\.0\.0\.1:\d+)", line)
    assert match, line
    base = match.group(1)
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{base}/v1/health") as response:
            assert (response.status, (await response.json())["pubsub"]) == (200, "idle")
        async with session.get(f"{base}/v1/status", headers={"Authorization": f"Bearer {token}"}) as response:
            assert response.status == 200
            assert (await response.json())["status"] == "idle"
        async with session.get(f"{base}/v1/status") as response:
            assert response.status == 401
    agent.send_signal(signal.SIGTERM)
    code, out, err = await agent.finish()
    assert code == 0, err
    assert "local api stopped" in out
    assert token not in out + err


async def test_run_without_an_api_token_exits_2_naming_the_setting(stack: DevStack, tmp_path: Path) -> None:
    env = environment(stack, tmp_path / "kiosk")
    del env["TELEHEALTH_API_TOKEN"]
    code, _, err = await (await start(env)).finish()
    assert code == 2
    assert "telehealth-agent: config: api_token: not set; looked in TELEHEALTH_API_TOKEN" in err
    assert "api_enabled = false" in err


async def test_run_with_the_api_off_needs_no_token_and_serves_nothing(
    stack: DevStack, tmp_path: Path
) -> None:
    env = environment(stack, tmp_path / "kiosk", TELEHEALTH_API_ENABLED="false")
    del env["TELEHEALTH_API_TOKEN"]
    agent = await start(env)
    await agent.next_line("agent started role=patient")
    agent.send_signal(signal.SIGTERM)
    code, out, err = await agent.finish()
    assert code == 0, err
    assert "local api" not in out


async def test_a_taken_port_stops_the_start_naming_the_setting(stack: DevStack, tmp_path: Path) -> None:
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        env = environment(stack, tmp_path / "kiosk", TELEHEALTH_API_PORT=str(port))
        code, out, err = await (await start(env)).finish()
    finally:
        server.close()
        await server.wait_closed()
    assert code == 1
    assert f"start failed reason=api_port: 127.0.0.1:{port}: cannot listen" in out + err


@pytest.fixture
async def devstacks() -> AsyncIterator[list[Devstack]]:
    async for processes in started_devstacks():
        yield processes


def read(path: Path) -> str:
    return path.read_text()


async def test_devstack_writes_each_agents_api_token_to_a_credential_file(
    devstacks: list[Devstack], tmp_path: Path
) -> None:
    env_file = tmp_path / "dev.env"
    process = await devstack(devstacks, "--env-file", str(env_file), "--state-dir", str(tmp_path / "state"))
    await process.next_line("# written to")
    kiosk = process.kiosk_settings()
    assert "TELEHEALTH_API_TOKEN" not in kiosk  # the file's path, never the token itself
    assert kiosk["TELEHEALTH_API_PORT"] == "8470"
    token_file = Path(kiosk["TELEHEALTH_API_TOKEN_FILE"])
    assert stat.S_IMODE(os.stat(token_file).st_mode) == 0o600
    token = read(token_file)
    assert token not in "".join(process.lines) + read(env_file)
    settings = load_settings(environ={**kiosk, "TELEHEALTH_STATE_DIR": str(tmp_path / "kiosk")})
    assert settings.api_token is not None and settings.api_token.get_secret_value() == token
    provider = process.provider_settings("dr-demo")
    assert provider["TELEHEALTH_API_PORT"] == "8471"
    assert read(Path(provider["TELEHEALTH_API_TOKEN_FILE"])) not in ("", token)
    await process.stop()
