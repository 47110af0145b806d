"""sd_notify against a real unix datagram socket, and when systemd's socket has gone away."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from telehealth_client import systemd


@pytest.fixture
def notify_socket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        sock.settimeout(5)
        monkeypatch.setenv("NOTIFY_SOCKET", str(path))
        yield sock


def test_ready_sends_ready_and_status(notify_socket: socket.socket) -> None:
    assert systemd.ready("idle") is True
    assert notify_socket.recv(4096).decode() == "READY=1\nSTATUS=idle"


def test_stopping_sends_stopping(notify_socket: socket.socket) -> None:
    assert systemd.stopping() is True
    assert notify_socket.recv(4096).decode() == "STOPPING=1\nSTATUS=stopping"


def test_no_socket_configured_is_a_no_op(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert systemd.status("anything") is False


@pytest.mark.parametrize("make_dead", ["missing", "not-listening"])
def test_a_vanished_socket_is_reported_not_raised(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, make_dead: str
) -> None:
    # systemd restarted or the unit dropped Type=notify: the agent must keep running.
    path = tmp_path / "gone.sock"
    if make_dead == "not-listening":
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.bind(str(path))  # bound, then closed: connect() is refused
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    assert systemd.ready("idle") is False
    assert systemd.stopping() is False
    assert any("notify socket unusable" in record.getMessage() for record in caplog.records)


def test_watchdog_interval_is_half_of_watchdog_usec(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    monkeypatch.setenv("WATCHDOG_USEC", "10000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    assert systemd.watchdog_interval_seconds() == 5.0
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid() + 1))
    assert systemd.watchdog_interval_seconds() is None
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    monkeypatch.setenv("WATCHDOG_USEC", "soon")
    assert systemd.watchdog_interval_seconds() is None
    monkeypatch.setenv("WATCHDOG_USEC", "0")
    assert systemd.watchdog_interval_seconds() is None


async def test_the_pinger_starts_only_for_this_process_and_stops_at_close(
    notify_socket: socket.socket, monkeypatch: pytest.MonkeyPatch
) -> None:
    import asyncio
    import os

    monkeypatch.setenv("WATCHDOG_USEC", "200000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid() + 1))  # another process is watched
    assert systemd.WatchdogPinger().start() is False
    monkeypatch.delenv("WATCHDOG_PID")
    pinger = systemd.WatchdogPinger()
    assert pinger.start() is True
    notify_socket.setblocking(False)
    loop = asyncio.get_running_loop()
    assert await asyncio.wait_for(loop.sock_recv(notify_socket, 4096), 5) == b"WATCHDOG=1"
    await pinger.aclose()
    tasks = [t for t in asyncio.all_tasks() if t.get_name() == "systemd-watchdog"]
    assert tasks == []
