"""The ``telehealth-agent`` command as an operator runs it: a real process, real signals."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import stat
import sys
from asyncio.subprocess import PIPE
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from telehealth_client import __version__
from telehealth_client.config import load_settings
from telehealth_devstack.relay import Relay
from telehealth_devstack.stack import DevStack
from tests.support.cli import AGENT, Process, clean_environment, notified, notify_socket
from tests.support.devstack_cli import Devstack, written_settings


async def start(*args: str, env: dict[str, str] | None = None) -> Process:
    return await Process.spawn(*AGENT, *args, env={**os.environ, **env} if env is not None else None)


# Agents write their state here, never to the default /var/lib/telehealth-agent of the machine.


async def test_version() -> None:
    process = await start("version")
    code, out, _ = await process.finish()
    assert code == 0
    assert out.strip() == f"telehealth-agent {__version__}"


async def test_invalid_settings_stop_start_up_with_one_line_each_and_exit_2(tmp_path: Path) -> None:
    config = tmp_path / "agent.toml"
    config.write_text('user_id = "dr.smith"\napi_port = "eighty"\n')
    env = clean_environment({"TELEHEALTH_ROLE": "surgeon", "TELEHEALTH_CIPHER_KEY": "never-print-me-0001"})
    process = await start("run", "--config", str(config), env=env)
    code, _, err = await process.finish()
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 3
    assert all(line.startswith("telehealth-agent: config: ") for line in lines)
    # Each names where its value came from: the file's two, the environment's one.
    assert any("user_id (config file)" in line for line in lines)
    assert any("api_port (config file)" in line for line in lines)
    assert any("role (TELEHEALTH_ROLE)" in line for line in lines)
    assert "never-print-me-0001" not in err


async def test_run_without_keys_is_a_configuration_error() -> None:
    process = await start("run", env=clean_environment({}))
    code, _, err = await process.finish()
    assert code == 2
    assert "subscribe_key: not set" in err


async def test_unknown_command_is_a_usage_error() -> None:
    process = await start("teleport")
    code, _, err = await process.finish()
    assert code == 2
    assert "invalid choice" in err


@pytest.fixture
async def open_relay() -> AsyncIterator[Relay]:
    async with Relay(publish_key="pub-c-cli", subscribe_key="sub-c-cli", secret_key="sec-c-cli") as relay:
        yield relay


PROVIDER = {"TELEHEALTH_ROLE": "provider", "TELEHEALTH_USER_ID": "dr-cli"}


def agent_env(relay: Relay, **extra: str) -> dict[str, str]:
    return clean_environment(
        {
            "TELEHEALTH_USER_ID": "kiosk-cli",
            "TELEHEALTH_ORIGIN": relay.origin,
            "TELEHEALTH_SSL": "false",
            "TELEHEALTH_PUBLISH_KEY": "pub-c-cli",
            "TELEHEALTH_SUBSCRIBE_KEY": "sub-c-cli",
            "TELEHEALTH_CIPHER_KEY": "cli-cipher-key-0001",
            "TELEHEALTH_RECONNECT_MAX_SECONDS": "1",
            # The local API is on by default: its token, and a free port (never the default's).
            "TELEHEALTH_API_TOKEN": "cli-api-token",
            "TELEHEALTH_API_PORT": "0",
            **extra,
        }
    )


async def test_run_connects_notifies_systemd_and_stops_cleanly_on_sigterm(
    open_relay: Relay, tmp_path: Path
) -> None:
    # A provider's cart: it listens on its notification channel from the start.
    notify_path = tmp_path / "notify.sock"
    with notify_socket(notify_path) as notify:
        env = agent_env(open_relay, NOTIFY_SOCKET=str(notify_path), **PROVIDER)
        process = await start("run", env=env)
        await process.next_line("bus status=connected")
        await notified(notify, b"READY=1")
        await notified(notify, b"STATUS=pub/sub connected")
        assert open_relay.occupants("notification.dr-cli") == ["dr-cli"]

        process.send_signal(signal.SIGTERM)
        code, out, err = await process.finish()
        await notified(notify, b"STOPPING=1")
    assert code == 0, err
    assert "agent stopped" in out
    assert "cli-cipher-key-0001" not in out + err


async def test_run_reports_access_denied_without_a_token(open_relay: Relay) -> None:
    open_relay.enforce_access = True
    process = await start("run", env=agent_env(open_relay, **PROVIDER))
    await process.next_line("bus status=access-denied")
    process.send_signal(signal.SIGINT)
    code, _, _ = await process.finish()
    assert code == 0


@asynccontextmanager
async def recording_proxy(target: str) -> AsyncIterator[tuple[str, list[str]]]:
    """Forwards every request to ``target`` (the real clinic stand-in) and records what was asked."""
    seen: list[str] = []
    async with aiohttp.ClientSession() as session:

        async def forward(request: web.Request) -> web.Response:
            seen.append(f"{request.method} {request.path}")
            headers = {
                k: v for k, v in request.headers.items() if k.lower() in ("authorization", "content-type")
            }
            async with session.request(
                request.method, target + request.path_qs, headers=headers, data=await request.read()
            ) as answer:
                return web.Response(
                    status=answer.status, body=await answer.read(), content_type=answer.content_type
                )

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", forward)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        try:
            yield f"http://127.0.0.1:{runner.addresses[0][1]}", seen
        finally:
            await runner.cleanup()


@pytest.fixture
async def dev_stack() -> AsyncIterator[DevStack]:
    # Enforces Access Manager, like production; its kiosk's credential is bound to "kiosk-idle".
    async with DevStack(kiosks=("kiosk-idle",)) as stack:
        yield stack


async def test_an_idle_kiosk_asks_for_no_token_logs_no_warning_and_is_idle(
    dev_stack: DevStack, tmp_path: Path
) -> None:
    assert dev_stack.clinic is not None
    async with recording_proxy(dev_stack.clinic.url) as (clinic_url, seen):
        with notify_socket(tmp_path / "notify.sock") as notify:
            environment = {
                **dev_stack.agent_environment("kiosk-idle"),
                "TELEHEALTH_CLINIC_URL": clinic_url,
                "NOTIFY_SOCKET": str(tmp_path / "notify.sock"),
            }
            kiosk = await start("run", env=clean_environment(environment))
            ready = await notified(notify, b"READY=1")
            kiosk.send_signal(signal.SIGTERM)
            code, out, err = await kiosk.finish()
        assert code == 0, err
        assert b"STATUS=idle" in ready
        assert "agent started role=patient user=kiosk-idle status=idle" in out
        assert "level=warning" not in out
        # Nothing subscribed, so the bus never connects or is denied: it only stops at the end.
        assert [
            line for line in out.splitlines() if "bus status=" in line and "status=stopped" not in line
        ] == []
        # The clinic was asked for no token: only its audit sink's head, which the trail checks at start.
        assert seen == ["GET /api/audit-events/head"]

        # The proxy does see a cart's agent ask (a provider's standing token: the next issue).
        seen.clear()
        provider = {**dev_stack.agent_environment("dr-demo"), "TELEHEALTH_CLINIC_URL": clinic_url}
        cart = await start("run", env=clean_environment(provider))
        await cart.next_line("agent started role=provider user=dr-demo")
        cart.send_signal(signal.SIGTERM)
        code, _, err = await cart.finish()
        assert code == 0, err
        # The audit sink's head as its trail opens, its token; then the trail's record of that
        # grant (ACCESS_TOKEN_GRANTED).
        assert seen[:2] == ["GET /api/audit-events/head", "POST /api/telemedicine/token"]
        assert set(seen[2:]) <= {"POST /api/audit-events"}


async def test_devstack_prints_working_settings_and_writes_the_env_file(tmp_path: Path) -> None:
    env_file = tmp_path / "dev.env"
    process = await Devstack.spawn(*AGENT, "devstack", "--env-file", str(env_file), env=clean_environment({}))
    await process.next_line(f"# written to {env_file}", within=60)
    printed = process.kiosk_settings()
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
    assert written_settings(env_file) == printed
    assert {"TELEHEALTH_ORIGIN", "TELEHEALTH_SUBSCRIBE_KEY", "TELEHEALTH_CLINIC_URL"} <= set(printed)
    settings = load_settings(environ={**printed, "TELEHEALTH_USER_ID": "kiosk-1"})
    assert settings.ssl is False and settings.origin.startswith("127.0.0.1:")

    # The default provider's own settings, printed as a comment: its credential mints its tokens;
    # the kiosk's may not.
    provider = process.provider_settings("dr-demo")
    assert (provider["TELEHEALTH_USER_ID"], provider["TELEHEALTH_ROLE"]) == ("dr-demo", "provider")
    assert provider["TELEHEALTH_DEVICE_CREDENTIAL"] != printed["TELEHEALTH_DEVICE_CREDENTIAL"]
    assert load_settings(environ=provider).user_id == "dr-demo"
    request = {
        "userId": "dr-demo",
        "role": "provider",
        "consultationChannel": "consultation.dr-demo.pat-1",
        "departmentId": "er",
    }
    statuses = []
    async with aiohttp.ClientSession() as session:
        for environment in (provider, printed):
            async with session.post(
                printed["TELEHEALTH_CLINIC_URL"] + "/api/telemedicine/token",
                json=request,
                headers={"Authorization": f"Bearer {environment['TELEHEALTH_DEVICE_CREDENTIAL']}"},
            ) as answer:
                statuses.append(answer.status)
    assert statuses == [200, 403]

    await process.stop()  # SIGINT: it exits 0


async def test_check_devices_through_the_agent_command(tmp_path: Path) -> None:
    from devices.synthetic import write_video

    video = write_video(tmp_path / "normal.mkv", "normal", frames=40)
    process = await start(
        "check-devices", "--camera", str(video), "--skip", "microphone", "--skip", "speaker", "--json"
    )
    code, out, err = await process.finish(within=60)
    assert code == 0, err
    report = json.loads(out)
    assert report["status"] == "ok"
    assert report["camera"]["status"] == "ok"

    missing = await start(
        "check-devices", "--camera", "/dev/video7", "--skip", "microphone", "--skip", "speaker"
    )
    code, out, _ = await missing.finish()
    assert code == 1
    assert "camera not found" in out

    usage = await start("check-devices", "--camera", "-1")
    code, _, err = await usage.finish()
    assert code == 2
    assert "--camera" in err


async def test_check_devices_takes_devices_and_thresholds_from_the_settings(tmp_path: Path) -> None:
    from devices.synthetic import write_video

    video = write_video(tmp_path / "normal.mkv", "normal", frames=40)
    skip = ("--skip", "microphone", "--skip", "speaker", "--json")
    plain = await start("check-devices", *skip, env=clean_environment({"TELEHEALTH_CAMERA": str(video)}))
    code, out, err = await plain.finish(within=60)
    assert code == 0, err
    assert json.loads(out)["camera"]["status"] == "ok"

    # A clinic that wants a brighter room: the same video now fails on its brightness.
    config = tmp_path / "agent.toml"
    config.write_text(
        f'camera = "{video}"\n[device_thresholds.camera]\ndark_warn = 250.0\ndark_fail = 240.0\n'
    )
    strict = await start("check-devices", "--config", str(config), *skip, env=clean_environment({}))
    code, out, _ = await strict.finish(within=60)
    assert code == 1
    assert json.loads(out)["camera"]["status"] == "fail"

    bad = await start("check-devices", *skip, env=clean_environment({"TELEHEALTH_CAMERA": "-1"}))
    code, _, err = await bad.finish()
    assert code == 2
    assert "camera (TELEHEALTH_CAMERA)" in err


async def test_run_without_a_cipher_key_refuses_to_start(open_relay: Relay) -> None:
    env = agent_env(open_relay)
    del env["TELEHEALTH_CIPHER_KEY"]
    process = await start("run", env=env)
    code, _, err = await process.finish()
    assert code == 2
    assert "cipher_key: not set" in err


DRAIN_FOREVER = """
import asyncio, sys
from telehealth_client.agent import run_until_signalled

async def start():
    print("started", flush=True)

async def stop():
    print("draining", flush=True)
    await asyncio.Event().wait()  # a drain that never ends

sys.exit(asyncio.run(run_until_signalled(start, stop)))
"""


async def test_a_second_signal_exits_at_once_when_draining_hangs() -> None:
    process = await Process.spawn(sys.executable, "-c", DRAIN_FOREVER)
    await process.next_line("started")
    process.send_signal(signal.SIGTERM)
    await process.next_line("draining")
    process.send_signal(signal.SIGTERM)
    code, _, _ = await process.finish(within=10)
    assert code == 1


FAILING_PARTS = """
import asyncio, logging, sys
from telehealth_client import logs
from telehealth_client.agent import run_until_signalled

logs.configure()

async def start():
    raise RuntimeError("MARKER-PHI in an exception message")

async def stop():
    raise ValueError("MARKER-PHI while stopping")

sys.exit(asyncio.run(run_until_signalled(start, stop)))
"""


async def test_a_failing_start_exits_1_and_still_stops_without_logging_messages() -> None:
    code, out, err = await (await Process.spawn(sys.executable, "-c", FAILING_PARTS)).finish()
    assert code == 1
    assert "start failed error=RuntimeError at " in out
    assert "stop failed error=ValueError at " in out
    assert "MARKER-PHI" not in out + err


async def test_run_with_a_state_dir_it_cannot_write_exits_1_naming_it(
    open_relay: Relay, tmp_path: Path
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    process = await start("run", env=agent_env(open_relay, TELEHEALTH_STATE_DIR=str(blocker)))
    code, out, _ = await process.finish()
    assert code == 1
    assert f"start failed reason=state_dir: {blocker}/consultation: cannot be written" in out


STOPPED_THEN_SLOW = """
import asyncio, sys, time
from telehealth_client.agent import run_until_signalled

async def start():
    print("started", flush=True)

async def stop():
    pass

async def failure():
    return "gave up"

code = asyncio.run(run_until_signalled(start, stop, failure=failure if sys.argv[1] == "failed" else None))
print(f"returned {code}", flush=True)
sys.stdin.read()  # a teardown that takes its time: the test ends it (by closing stdin)
sys.exit(code)
"""


async def test_a_signal_after_the_stop_never_meets_pythons_default() -> None:
    # Stopped by a first signal: one in the tail is the second, exit 1 at once (not 143).
    process = await Process.spawn(sys.executable, "-c", STOPPED_THEN_SLOW, "signalled", stdin=True)
    await process.next_line("started")
    process.send_signal(signal.SIGTERM)
    await process.next_line("returned 0")
    process.send_signal(signal.SIGTERM)
    assert await process.exited(within=10) == 1
    # Stopped by a failure: a signal in the tail is noted, the exit code stays the failure's.
    process = await Process.spawn(sys.executable, "-c", STOPPED_THEN_SLOW, "failed", stdin=True)
    await process.next_line("returned 1")
    process.send_signal(signal.SIGTERM)
    code, _, err = await process.finish(within=10)
    assert code == 1, err


async def test_run_exits_as_soon_as_it_stopped(open_relay: Relay) -> None:
    # The interpreter's teardown of a loaded agent (0.2-2.5 s) is skipped: a second SIGTERM right
    # after "agent stopped" finds the process gone (0) or exits at once (1), never 143.
    process = await start("run", env=agent_env(open_relay))
    await process.next_line("agent ready", within=30)
    process.send_signal(signal.SIGTERM)
    await process.next_line("agent stopped", within=30)
    with contextlib.suppress(ProcessLookupError):
        process.send_signal(signal.SIGTERM)
    code, _, err = await process.finish(within=10)
    assert code in (0, 1), err


async def test_config_into_a_closed_pipe_exits_quietly(open_relay: Relay) -> None:
    read_end, write_end = os.pipe()
    os.close(read_end)  # `telehealth-agent config | head -1`, head long gone
    try:
        process = await asyncio.create_subprocess_exec(
            *AGENT, "config", env={**os.environ, **agent_env(open_relay)}, stdout=write_end, stderr=PIPE
        )
    finally:
        os.close(write_end)
    _, err = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 1
    assert err.decode() == ""
