"""The agent's composition on the real relay and the real PubNub SDK: listeners and systemd STATUS."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from telehealth_client.agent import Agent, StateDirError, bus_config, ensure_writable_directory
from telehealth_client.config import Settings, load_settings
from telehealth_client.pubsub.bus import ConnectionStatus, Envelope
from telehealth_client.pubsub.pubnub_bus import PubNubBus
from telehealth_devstack.relay import Relay

PUBLISH_KEY = "pub-c-agent-test"
SUBSCRIBE_KEY = "sub-c-agent-test"


@pytest.fixture
async def relay() -> AsyncIterator[Relay]:
    async with Relay(
        publish_key=PUBLISH_KEY, subscribe_key=SUBSCRIBE_KEY, secret_key="sec-c-agent"
    ) as running:
        yield running


def settings_for(relay: Relay, user_id: str, role: str, state_dir: Path) -> Settings:
    return load_settings(
        environ={
            "TELEHEALTH_STATE_DIR": str(state_dir),
            "TELEHEALTH_USER_ID": user_id,
            "TELEHEALTH_ROLE": role,
            "TELEHEALTH_ORIGIN": relay.origin,
            "TELEHEALTH_SSL": "false",
            "TELEHEALTH_PUBLISH_KEY": PUBLISH_KEY,
            "TELEHEALTH_SUBSCRIBE_KEY": SUBSCRIBE_KEY,
            "TELEHEALTH_CIPHER_KEY": "agent-test-cipher-key",
            "TELEHEALTH_RECONNECT_MAX_SECONDS": "1",
        }
    )


@pytest.fixture
def notify(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> socket.socket:
    """systemd's notify socket, as the agent finds it: $NOTIFY_SOCKET."""
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.setblocking(False)
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    return sock


async def notified(sock: socket.socket, field: bytes, within: float = 10.0) -> None:
    """Wait for a datagram on the notify socket that carries ``field``."""

    async def receive() -> None:
        while field not in (await asyncio.get_running_loop().sock_recv(sock, 4096)).split(b"\n"):
            pass

    await asyncio.wait_for(receive(), within)


async def test_notification_listeners_are_called_and_systemd_hears_the_status(
    relay: Relay, notify: socket.socket, tmp_path: Path
) -> None:
    settings = settings_for(relay, "dr-agent", "provider", tmp_path)
    agent = Agent(settings)
    called_plain: list[Envelope] = []
    called_async: list[Envelope] = []
    delivered = asyncio.Event()

    async def async_listener(envelope: Envelope) -> None:
        called_async.append(envelope)
        delivered.set()

    agent.notification_listeners += [called_plain.append, async_listener]
    sender = PubNubBus(bus_config(settings_for(relay, "dr-sender", "provider", tmp_path)))
    try:
        await agent.start()
        await asyncio.wait_for(agent.connected.wait(), 10)
        await notified(notify, b"STATUS=pub/sub connected")

        await sender.publish("notification.dr-agent", {"type": "PATIENT_READY", "patientId": "pat-1"})
        await asyncio.wait_for(delivered.wait(), 10)
        assert called_plain == called_async
        (envelope,) = called_async
        assert envelope.message == {"type": "PATIENT_READY", "patientId": "pat-1"}
        assert envelope.publisher == "dr-sender"
        assert envelope.channel == "notification.dr-agent"
    finally:
        await sender.aclose()
        await agent.aclose()
        notify.close()


async def test_an_idle_kiosk_is_idle_and_subscribes_to_nothing(relay: Relay, tmp_path: Path) -> None:
    agent = Agent(settings_for(relay, "kiosk-agent", "patient", tmp_path))
    try:
        assert await agent.start() == "idle"
        assert agent.status == "idle"
        assert agent.bus is not None and agent.bus.status == ConnectionStatus.IDLE
        assert relay.occupants("notification.kiosk-agent") == []
    finally:
        await agent.aclose()


async def test_a_state_directory_that_cannot_be_written_stops_the_start_naming_it(
    relay: Relay, tmp_path: Path
) -> None:
    # Found at start, not at check-in with a patient at the kiosk.
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    agent = Agent(settings_for(relay, "kiosk-agent", "patient", blocker / "state"))
    try:
        with pytest.raises(StateDirError, match=r"state_dir: .*a-file/state/consultation: cannot be written"):
            await agent.start()
    finally:
        await agent.aclose()


def test_every_level_of_a_new_state_directory_is_owner_only(tmp_path: Path) -> None:
    """mkdir(parents=True) gives the levels it adds the default mode: a state directory is PHI's home."""
    state_dir = tmp_path / "var" / "telehealth"
    ensure_writable_directory(state_dir / "consultation")
    for level in (tmp_path / "var", state_dir, state_dir / "consultation"):
        assert level.stat().st_mode & 0o777 == 0o700, level
    assert list((state_dir / "consultation").iterdir()) == []  # the write probe is gone


def test_an_existing_state_directory_open_to_others_is_made_owner_only(tmp_path: Path) -> None:
    """A state directory made by hand with the umask's 0755 would show consultation IDs to every
    local user: the agent makes it (and its consultation directory) 0700; above it, nothing changes."""
    above = tmp_path / "srv"
    state_dir = above / "telehealth"
    (state_dir / "consultation").mkdir(parents=True)
    for level in (above, state_dir, state_dir / "consultation"):
        level.chmod(0o755)
    ensure_writable_directory(state_dir / "consultation", private_from=state_dir)
    assert state_dir.stat().st_mode & 0o777 == 0o700
    assert (state_dir / "consultation").stat().st_mode & 0o777 == 0o700
    assert above.stat().st_mode & 0o777 == 0o755
