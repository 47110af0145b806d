"""Check 5: TURN credentials from the clinic backend, and an allocation made with them.

Preflight's pieces: ``turn_credentials`` (the clinic's answer) and ``probe_turn`` (an allocation,
released at once). ``probe_turn`` lives beside the call and loads aiortc: imported in a thread,
here only, since the doctor is its own short process (the agent never loads aiortc).
"""

from __future__ import annotations

import asyncio
import importlib
import time

from telehealth_client.config import Settings
from telehealth_client.doctor.report import Result, failed, passed
from telehealth_client.media.common import CallError, TurnAddress
from telehealth_client.preflight import turn_credentials

NAME = "turn"
# Longer than a call's probe: a WAN round trip or two, and no call waiting on it.
PROBE_SECONDS = 5.0


async def check_turn(settings: Settings) -> Result:
    fetched, turn = await turn_credentials(settings)
    if turn is None:
        return failed(NAME, f"no TURN credentials: {fetched.reason} (see the clinic check)")
    try:
        server = turn.first_turn
    except CallError as exc:
        return failed(
            NAME, f"the clinic's TURN URLs are of no use: {exc.reason}: the clinic's side must fix them"
        )
    call = await asyncio.to_thread(importlib.import_module, "telehealth_client.media.call")
    started = time.monotonic()
    try:
        await call.probe_turn(turn, within=PROBE_SECONDS)
    except CallError as exc:
        return failed(NAME, allocation_refused(server, exc))
    took = (time.monotonic() - started) * 1000
    return passed(NAME, f"credentials from the clinic, an allocation on {describe(server)} in {took:.0f} ms")


def describe(server: TurnAddress) -> str:
    return f"{server.host}:{server.port} ({'TLS over ' if server.tls else ''}{server.transport.upper()})"


def allocation_refused(server: TurnAddress, exc: CallError) -> str:
    """What the TURN server's failure means, and the fix."""
    if exc.code == "turn-refused":
        return (
            f"{describe(server)} refused the credentials the clinic handed out: the clinic's TURN "
            "secret and the TURN server's must be the same"
        )
    return (
        f"{describe(server)}: {exc.reason}: check that the firewall lets {server.transport.upper()} "
        f"port {server.port} out (the TURN URLs come from the clinic)"
    )
