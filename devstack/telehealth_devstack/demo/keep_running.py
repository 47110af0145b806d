"""``demo --keep-running``: after the demo, its stack and a kiosk agent with its local API stay up
until Ctrl-C or SIGTERM, for a newcomer to look at (the technician page) and drive (the API).

The kiosk agent is ``telehealth-agent run`` in a child process, as on a kiosk, with the stack's
settings for the demo's kiosk, generated devices (so it can hold a call), its own state directory
under the demo's (removed with it) and its API on a free port of 127.0.0.1. FOR DEVELOPMENT AND
NEWCOMERS: the API token printed is the development stack's.

Public API: ``await keep_running(stack, state_dir, out, json_lines, verbose, start_within)``: starts
the agent, prints where it is, returns once a signal asked to stop and the agent has stopped.
``KeptKioskFailed`` when the agent did not start.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import sys
from pathlib import Path
from typing import Final, TextIO

from telehealth_devstack.demo.cast import KIOSK
from telehealth_devstack.generated_devices import write_devices
from telehealth_devstack.stack import DevStack

LISTENING: Final = re.compile(r"local api listening address=(http://[0-9.]+:\d+)")
STOP_WITHIN: Final = 20.0  # the agent drains on SIGTERM; past this it is killed


class KeptKioskFailed(Exception):
    """The kept kiosk agent did not start; the text says why (no secrets)."""


def _agent_environment(stack: DevStack, state_dir: Path) -> dict[str, str]:
    """The child's environment: ours without any ``TELEHEALTH_*``, then the kiosk's settings."""
    inherited = {name: value for name, value in os.environ.items() if not name.startswith("TELEHEALTH_")}
    return {
        **inherited,
        **stack.agent_environment(KIOSK),
        **write_devices(state_dir / "devices").settings(),
        "TELEHEALTH_STATE_DIR": str(state_dir / "agent"),
        "TELEHEALTH_API_PORT": "0",  # a free port: the URL is printed
    }


class KeptKiosk:
    """The kiosk agent's child process, its stdout read by a task of its own (the address, and the
    logs passed on to stderr when ``verbose``)."""

    def __init__(self, process: asyncio.subprocess.Process, verbose: bool) -> None:
        self._process = process
        self._verbose = verbose
        self.address: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def start(cls, environment: dict[str, str], verbose: bool) -> KeptKiosk:
        # A session of its own: a terminal's Ctrl-C reaches the demo only, which then stops the agent
        # with one SIGTERM (a second signal would make the agent exit at once, undrained).
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "telehealth_client",
            "run",
            env=environment,
            stdout=asyncio.subprocess.PIPE,
            start_new_session=True,
        )
        return cls(process, verbose)

    async def _read(self) -> None:
        assert self._process.stdout is not None
        while line := await self._process.stdout.readline():
            text = line.decode(errors="replace")
            if self._verbose:
                sys.stderr.write(text)
            if not self.address.done() and (match := LISTENING.search(text)):
                self.address.set_result(match.group(1))
        if not self.address.done():
            code = await self._process.wait()
            self.address.set_exception(KeptKioskFailed(f"the kiosk agent exited with code {code}"))

    async def stop(self) -> int:
        """SIGTERM, then its exit code (killed past ``STOP_WITHIN``); the reader ends with it."""
        if self._process.returncode is None:
            self._process.send_signal(signal.SIGTERM)
        try:
            code = await asyncio.wait_for(self._process.wait(), STOP_WITHIN)
        except TimeoutError:
            self._process.kill()
            code = await self._process.wait()
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader
        if not self.address.done():
            self.address.cancel()
        elif not self.address.cancelled():
            self.address.exception()  # retrieved: a failed start is reported by the caller, if at all
        return code


def _print_kept(out: TextIO, json_lines: bool, url: str, token: str, console: str) -> None:
    if json_lines:
        kept = {"keptRunning": True, "technicianPage": url, "apiToken": token, "providerConsole": console}
        out.write(json.dumps(kept) + "\n")
    else:
        out.write(
            f"kept running: the development stack and kiosk {KIOSK}'s agent\n"
            f"  technician page: {url}\n"
            f"  API token (development only): {token}\n"
            f"  provider console: {console}\n"
            "  stop: Ctrl-C, or SIGTERM\n"
        )
    out.flush()


async def keep_running(
    stack: DevStack, state_dir: Path, out: TextIO, json_lines: bool, verbose: bool, start_within: float
) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        environment = await asyncio.to_thread(_agent_environment, stack, state_dir)
        kiosk = await KeptKiosk.start(environment, verbose)
        try:
            stopping: asyncio.Future[object] = asyncio.ensure_future(stop.wait())
            try:
                waited: set[asyncio.Future[object]] = {kiosk.address, stopping}
                done, _ = await asyncio.wait(waited, timeout=start_within, return_when="FIRST_COMPLETED")
            finally:
                stopping.cancel()
            if not stop.is_set():
                if not done:
                    raise KeptKioskFailed(f"the kiosk agent's API did not listen within {start_within:g} s")
                url = f"{kiosk.address.result()}/"
                token = environment["TELEHEALTH_API_TOKEN"]
                _print_kept(out, json_lines, url, token, f"{stack.console_url}/")
                await stop.wait()
        finally:
            code = await kiosk.stop()
        if code != 0:
            raise KeptKioskFailed(f"the kiosk agent exited with code {code}")
    finally:
        loop.remove_signal_handler(signal.SIGINT)
