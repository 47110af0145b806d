"""Outages of the development stack's coturn, each undone in a ``finally`` (nothing leaks into the
next test): frozen with SIGSTOP, restarted (its allocations gone), UDP between its relay ports
dropped on ``lo`` with iptables (the media path between two of its allocations, nothing else).
Each returns the monotonic time the outage ended."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import time

from telehealth_devstack.turn import TurnServer


def iptables_unusable() -> str | None:
    """Why a rule cannot be added here, or None (checked by listing the INPUT chain for real)."""
    if shutil.which("iptables") is None:
        return "iptables is not installed (scripts/install-system-deps.sh --test installs it)"
    if os.geteuid() != 0:
        return "iptables needs root"
    listed = subprocess.run(["iptables", "-L", "INPUT", "-n"], capture_output=True, text=True, check=False)
    if listed.returncode != 0:
        return f"iptables cannot work in this sandbox: {listed.stderr.strip()[:200]}"
    return None


async def iptables(action: str, rule: list[str]) -> None:
    process = await asyncio.create_subprocess_exec(
        "iptables", action, *rule, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
    )
    _, error = await process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"iptables {action} failed ({process.returncode}): {error.decode().strip()}")


class TurnFaults:
    def __init__(self, server: TurnServer) -> None:
        self.server = server
        self._rules: list[list[str]] = []

    async def freeze(self, seconds: float) -> float:
        pid = self.server.pid
        assert pid is not None, "coturn is not running"
        os.kill(pid, signal.SIGSTOP)
        try:
            await asyncio.sleep(seconds)  # the outage itself
        finally:
            os.kill(pid, signal.SIGCONT)
        return time.monotonic()

    async def restart(self) -> float:
        await self.server.restart()
        return time.monotonic()

    async def drop_udp(self, seconds: float) -> float:
        low, high = self.server.relay_ports
        rule = [
            "INPUT", "-i", "lo", "-p", "udp",
            "--sport", f"{low}:{high}", "--dport", f"{low}:{high}", "-j", "DROP",
        ]  # fmt: skip
        await iptables("-A", rule)
        self._rules.append(rule)
        try:
            await asyncio.sleep(seconds)  # the outage itself
        finally:
            await iptables("-D", rule)
            self._rules.remove(rule)
        return time.monotonic()

    async def heal(self) -> None:
        """Whatever a failed test left: coturn resumed, running, no rule of ours in place."""
        pid = self.server.pid
        if pid is not None:
            os.kill(pid, signal.SIGCONT)
        if not self.server.running:
            await self.server.restart()
        for rule in list(self._rules):
            await iptables("-D", rule)
            self._rules.remove(rule)
