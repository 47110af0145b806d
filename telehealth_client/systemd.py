"""sd_notify: tell systemd we are READY, alive (WATCHDOG), what we do (STATUS), or STOPPING.

A few lines instead of a dependency. Outside systemd ($NOTIFY_SOCKET unset) every call
is a no-op, so the agent runs the same from a terminal.

``WatchdogPinger``: while the event loop runs, ``WATCHDOG=1`` every half ``WatchdogSec`` (only
when systemd set ``WATCHDOG_USEC`` for this process); sent by a task on the loop itself, so a
blocked loop stops the pings and systemd restarts the agent.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket

log = logging.getLogger(__name__)


def notify(*fields: str) -> bool:
    """Send ``KEY=value`` fields to systemd; return whether they reached its notify socket."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]  # abstract namespace socket
    payload = "\n".join(fields).encode("utf-8")
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.connect(address)
            sock.sendall(payload)
    except OSError as exc:
        # systemd went away or the unit is no longer Type=notify: the agent keeps running.
        log.warning("systemd notify socket unusable error=%s", type(exc).__name__)
        return False
    return True


def ready(status: str) -> bool:
    return notify("READY=1", f"STATUS={status}")


def status(text: str) -> bool:
    return notify(f"STATUS={text}")


def stopping(status: str = "stopping") -> bool:
    return notify("STOPPING=1", f"STATUS={status}")


def watchdog() -> bool:
    return notify("WATCHDOG=1")


def watchdog_interval_seconds() -> float | None:
    """Half of systemd's WatchdogSec for this process, or None when no watchdog is set."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        microseconds = int(usec)
    except ValueError:
        return None
    return microseconds / 2_000_000 if microseconds > 0 else None


class WatchdogPinger:
    """Owns the task that pings systemd's watchdog; ``start()`` then ``await aclose()``."""

    def __init__(self) -> None:
        self._task: asyncio.Task[None] | None = None

    def start(self) -> bool:
        """Start pinging if systemd watches this process; whether it does. Idempotent."""
        interval = watchdog_interval_seconds()
        if interval is None or self._task is not None:
            return self._task is not None
        log.info("systemd watchdog on interval=%.3fs", interval)
        self._task = asyncio.get_running_loop().create_task(_ping_every(interval), name="systemd-watchdog")
        return True

    async def aclose(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


async def _ping_every(interval: float) -> None:
    # On the event loop on purpose: a ping proves the loop still turns, not just that a thread lives.
    while True:
        watchdog()
        await asyncio.sleep(interval)
