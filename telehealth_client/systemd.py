"""sd_notify: tell systemd we are READY, alive (WATCHDOG), what we do (STATUS), or STOPPING.

A few lines instead of a dependency. Outside systemd ($NOTIFY_SOCKET unset) every call
is a no-op, so the agent runs the same from a terminal.
"""

from __future__ import annotations

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
        return int(usec) / 2_000_000
    except ValueError:
        return None
