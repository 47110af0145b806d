"""What ``telehealth-agent run`` tells systemd through ``NOTIFY_SOCKET`` (a datagram socket bound
by the test): READY only once the local API answers, never when it cannot listen or when the
settings cannot work (exit 2, each named); STATUS= lines with the consultation's state, its call
and the PubNub connection; STOPPING on SIGTERM, exit 0."""

from __future__ import annotations

import asyncio
import signal
import socket
from pathlib import Path

import aiohttp
import pytest

from telehealth_devstack.relay import Relay
from telehealth_devstack.stack import DevStack
from tests.support import bus as bus_support
from tests.support.api import CHECK_IN, KIOSK, record_consent
from tests.support.cli import clean_environment, notified, notify_socket
from tests.support.notify import Agents, free_port, pending, status_containing, under_systemd

pytestmark = pytest.mark.integration

API_TOKEN = "notify-api-token"
CIPHER_KEY = "notify-cipher-key-never-printed"


def cart_environment(relay: Relay, notify_path: Path, **extra: str) -> dict[str, str]:
    """A provider's cart on the development relay (loopback, plain HTTP, no Access Manager)."""
    return clean_environment(
        {
            "TELEHEALTH_ROLE": "provider",
            "TELEHEALTH_USER_ID": "dr-notify",
            "TELEHEALTH_ORIGIN": relay.origin,
            "TELEHEALTH_SSL": "false",
            "TELEHEALTH_PUBLISH_KEY": bus_support.PUBLISH_KEY,
            "TELEHEALTH_SUBSCRIBE_KEY": bus_support.SUBSCRIBE_KEY,
            "TELEHEALTH_CIPHER_KEY": CIPHER_KEY,
            "TELEHEALTH_API_TOKEN": API_TOKEN,
            "TELEHEALTH_API_PORT": "0",
            "NOTIFY_SOCKET": str(notify_path),
            **extra,
        }
    )


async def test_ready_comes_once_the_api_answers_then_status_then_stopping(
    relay: Relay, tmp_path: Path, agents: Agents
) -> None:
    port = free_port()
    notify_path = tmp_path / "notify.sock"
    with notify_socket(notify_path) as notify:
        process = await agents.run(cart_environment(relay, notify_path, TELEHEALTH_API_PORT=str(port)))
        ready = await notified(notify, b"READY=1", within=30.0)
        # The moment READY arrives the API answers (whatever the connection's state).
        async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}/v1/health") as answer:
            health = await answer.json()
        assert answer.status in (200, 503) and "pubsub" in health, health
        assert any(field.startswith(b"STATUS=") and b"pub/sub" in field for field in ready), ready
        # A cart with no consultation: the PubNub connection alone, once up.
        await status_containing(notify, "pub/sub connected")
        process.send_signal(signal.SIGTERM)
        await notified(notify, b"STOPPING=1")
        code, out, err = await process.finish()
    assert code == 0, err
    assert out.index("local api listening") < out.index("agent ready")
    assert CIPHER_KEY not in out + err


async def test_no_ready_when_the_api_cannot_listen(relay: Relay, tmp_path: Path, agents: Agents) -> None:
    notify_path = tmp_path / "notify.sock"
    with notify_socket(notify_path) as notify, socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        process = await agents.run(cart_environment(relay, notify_path, TELEHEALTH_API_PORT=str(port)))
        code, out, err = await process.finish()
        datagrams = pending(notify)
    assert code == 1, err
    assert f"api_port: 127.0.0.1:{port}: cannot listen" in out
    assert not any("READY=1" in fields for fields in datagrams), datagrams


async def test_settings_that_cannot_work_exit_2_naming_each_and_never_ready(
    tmp_path: Path, agents: Agents
) -> None:
    # A cart as installed but never filled in: the TLS origin of production (nothing is reached).
    with under_systemd(
        tmp_path,
        {
            "TELEHEALTH_ROLE": "provider",
            "TELEHEALTH_SUBSCRIBE_KEY": "sub-c-filled-in",
            "TELEHEALTH_CIPHER_KEY": CIPHER_KEY,
            "TELEHEALTH_API_TOKEN": API_TOKEN,
            "TELEHEALTH_CLINIC_URL": "https://clinic.example.invalid",
        },
    ) as (notify, environment):
        process = await agents.run(environment)
        code, out, err = await process.finish()
        datagrams = pending(notify)
    assert code == 2, out + err
    lines = err.strip().splitlines()
    assert all(line.startswith("telehealth-agent: config: ") for line in lines), lines
    named = {line.removeprefix("telehealth-agent: config: ").split(":")[0].split(" ")[0] for line in lines}
    expected = {
        "publish_key",
        "device_credential",
        "user_id",
        "organization_id",
        "department_id",
        "clinic_url",
    }
    assert named == expected, lines
    assert any("user_id: is still the placeholder 'kiosk-unconfigured'" in line for line in lines)
    assert any("device_credential: not set" in line and "from the clinic" in line for line in lines)
    assert datagrams == [] and out == ""
    assert CIPHER_KEY not in err


async def test_the_installers_placeholder_secret_is_named_as_such(tmp_path: Path, agents: Agents) -> None:
    credentials = tmp_path / "credentials"
    credentials.mkdir(mode=0o700)
    placeholder = credentials / "device_credential"
    # As scripts/install-kiosk.sh writes it: two lines, marked FILL-IN.
    placeholder.write_text(
        "FILL-IN: replace this whole file with this kiosk's device credential, on one line.\n"
        "(Until then the agent refuses to start.)\n"
    )
    placeholder.chmod(0o600)
    with under_systemd(
        tmp_path,
        {
            "CREDENTIALS_DIRECTORY": str(credentials),
            "TELEHEALTH_USER_ID": "kiosk-lobby",
        },
    ) as (notify, environment):
        code, _, err = await (await agents.run(environment)).finish()
        datagrams = pending(notify)
    assert code == 2
    assert f"device_credential (credential {placeholder}): is still the installer's placeholder" in err
    assert "line break" not in err
    assert datagrams == []


async def test_status_carries_the_consultation_its_call_and_pubsub(
    kiosk_stack: DevStack, tmp_path: Path, agents: Agents
) -> None:
    with under_systemd(
        tmp_path,
        {
            **kiosk_stack.agent_environment(KIOSK),
            "TELEHEALTH_MEDIA": "false",
            "TELEHEALTH_API_PORT": str(port := free_port()),
        },
    ) as (notify, environment):
        process = await agents.run(environment)
        ready = await notified(notify, b"READY=1", within=30.0)
        assert b"STATUS=idle" in ready
        await record_consent(kiosk_stack)
        headers = {"Authorization": f"Bearer {environment['TELEHEALTH_API_TOKEN']}"}
        async with (
            aiohttp.ClientSession(headers=headers) as http,
            http.post(f"http://127.0.0.1:{port}/v1/check-in", json=CHECK_IN) as answer,
        ):
            assert answer.status == 201, await answer.text()
        # No provider has joined, no call was started; the consultation's channel is connected.
        line = await status_containing(notify, ", call none, pub/sub connected")
        assert line.startswith(("consultation checked-in", "consultation waiting")), line
        process.send_signal(signal.SIGTERM)
        code, _, err = await process.finish()
    assert code == 0, err


def catches(pid: int, signum: int) -> bool:
    """Whether process ``pid`` has a handler for ``signum`` (the SigCgt mask of /proc/PID/status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigCgt:"):
            return bool(int(line.split()[1], 16) >> (signum - 1) & 1)
    return False


async def handler_installed(pid: int, signum: int, within: float = 10.0) -> None:
    """Once ``pid`` catches ``signum``: /proc is polled, since the event has no other sign."""
    interval = 0.002
    for _ in range(int(within / interval)):
        if catches(pid, signum):
            return
        await asyncio.sleep(interval)
    raise AssertionError(f"process {pid} did not catch signal {signum} within {within} s")


async def test_a_sigterm_while_the_agent_is_still_importing_stops_it_cleanly(
    relay: Relay, tmp_path: Path, agents: Agents
) -> None:
    # The signal lands as soon as the process catches SIGTERM: the guard installed before the
    # imports, a second or so before the event loop's handler (Python's default would exit 143).
    notify_path = tmp_path / "notify.sock"
    with notify_socket(notify_path) as notify:
        process = await agents.run(cart_environment(relay, notify_path))
        await handler_installed(process.process.pid, signal.SIGTERM)
        process.send_signal(signal.SIGTERM)
        stopping = await notified(notify, b"STOPPING=1", within=30.0)
        code, out, err = await process.finish()
        datagrams = pending(notify)
    assert code == 0, err
    # Caught a second before the agent could start (its imports take that long): never READY.
    assert "signal=SIGTERM before the start: stopping" in out, out
    assert not any("READY=1" in fields for fields in [*datagrams, [f.decode() for f in stopping]])
