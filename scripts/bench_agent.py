"""The agent as systemd runs it, measured: ``telehealth-agent run`` processes on the development stack.

A kiosk and a provider's cart, each a ``telehealth-agent run`` process (its console script, as the
unit's ``ExecStart=``) with its local API, on the development stack in this process (relay
enforcing Access Manager, clinic stand-in, coturn). It prints JSON:

- ``ready_s``: from spawning the process to its ``READY=1`` datagram on a ``NOTIFY_SOCKET`` bound
  here, as ``Type=notify`` sees it; ``--starts`` starts of each (the first on an empty state
  directory), their median and max; ``idle_stop_s``: SIGTERM to exit of the idle starts before the
  last one;
- ``idle_rss_mb``: the kiosk's resident memory (``VmRSS``) ``--idle`` seconds after its last READY,
  the agent's and its child processes' (the provider's beside it);
- ``call_rss_mb``: a 640x480 call at 30 fps between them (a synthetic video file as each camera, a
  generated tone as each microphone), driven through their APIs as the README's walkthrough does,
  sampled every second for ``--call-seconds`` once video is live both ways: the peak of each agent
  process, of its media children together (the call's and the warm spare for the next one), and of
  both together, per side;
- ``stop``: the call ended, the consultation still in progress, the relay answering every request
  with 503 (PubNub refusing publishes), the kiosk queues ``--messages`` chat messages
  (``POST /v1/chat``, durable once answered); then SIGTERM, until the process exited (and its exit
  code, the outbox backlog before and after, and ``agent_s``: the agent's own ``agent stopped
  seconds=``, its stop without the interpreter's exit);
- ``reconnect``: a provider's cart started with PubNub unreachable (the relay stopped): its READY
  while the origin is down, its status line (``GET /v1/status``, as ``STATUS=``) and whether it
  still ran after ``--outage`` seconds, and how long after the origin came back on its port the
  cart was up again (on the development stack the clinic stand-in answers 502 while the relay is
  down, so the line names the clinic);
- ``targets``: READY under 1.0 s (the median, each role), the kiosk agent idle under 80 MB, the
  stop with a full outbox under 2 s, each with its value and ``pass`` or ``fail``;
- ``machine``: the cores and the load average before and after (the numbers are the agent's own
  only on a quiet machine).

The product's modules are compiled first, as an install's are. It exits 0 whatever the numbers
(it reports; a phase that failed is named under ``errors``).

    .venv/bin/python scripts/bench_agent.py [--starts 3] [--idle 5] [--call-seconds 10] [--messages 200]
        [--ready-only] [--only-stop] [--relay refusing|silent]

``--ready-only``: the starts and the idle RSS only, the quick loop for start time and memory (no
call, no stop; the stop's target is left out).

``--only-stop`` measures the stop alone: one start of each, no idle wait, no memory sampling (the
call is still held and ended first, as the stop's setting). ``--relay silent``: PubNub answers
nothing during the stop's phase instead of 503 (the network gone: the stop's worst case).
"""

from __future__ import annotations

import argparse
import asyncio
import compileall
import contextlib
import logging
import re
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
from bench_api import (  # scripts/ is on the path when a script runs
    alsa_environment,
    consented_check_in,
    media_environment,
    write_results,
)

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import devices  # noqa: E402
import telehealth_client  # noqa: E402
from telehealth_client import logs  # noqa: E402
from telehealth_client.durability import OUTBOX_FILE  # noqa: E402
from telehealth_client.protocol import channels  # noqa: E402
from telehealth_devstack.stack import DevStack  # noqa: E402
from tests.support.cli import unset_environment  # noqa: E402
from tests.support.run_agent import RunAgent, agent_command, descendants, rss_mb  # noqa: E402

KIOSK = "kiosk-bench-agent"
PROVIDER = "dr-bench-agent"
PATIENT = "pat-bench-agent"
CONSULTATION = channels.consultation(PROVIDER, PATIENT)
STEP_WITHIN = 30.0  # what the other agent learns over PubNub
MEDIA_WITHIN = 90.0  # both media children up (aiortc's import), relay-only through coturn
TARGETS = {"ready_s": 1.0, "idle_rss_mb": 80.0, "stop_s": 2.0}


def compile_the_product() -> None:
    """The agent's modules compiled (``__pycache__``) as an install's are (pip compiles them): a
    checkout run with PYTHONDONTWRITEBYTECODE would otherwise compile every module at every start,
    a few tenths of a second of each READY that no kiosk pays."""
    for package in (telehealth_client, devices):
        compileall.compile_dir(Path(package.__file__).parent, quiet=1)


def memory(pid: int) -> dict[str, float]:
    """The agent's resident memory and its children's together, in MiB, and how many children."""
    agent = rss_mb(pid)
    children = [rss_mb(child) for child in descendants(pid)]
    return {
        "agent": round(agent, 1),
        "children": round(sum(children), 1),
        "total": round(agent + sum(children), 1),
        "child_processes": len(children),
    }


def consultation(status: dict[str, Any]) -> dict[str, Any] | None:
    found = [each for each in status["consultations"] if each["consultationId"] == CONSULTATION]
    return found[0] if found else None


def in_state(state: str) -> Callable[[dict[str, Any]], bool]:
    return lambda status: (one := consultation(status)) is not None and one["state"] == state


def call_status(status: dict[str, Any]) -> str | None:
    one = consultation(status)
    return None if one is None or one["call"] is None else str(one["call"]["status"])


def summary(samples: list[float]) -> dict[str, Any]:
    return {
        "median": round(statistics.median(samples), 3),
        "max": round(max(samples), 3),
        "samples": [round(sample, 3) for sample in samples],
    }


async def measure_starts(agent: RunAgent, starts: int, stops: list[float]) -> list[float]:
    """``starts`` starts to READY; each but the last stopped again (its stop time in ``stops``)."""
    readies = []
    for n in range(starts):
        readies.append(await agent.start())
        if n < starts - 1:
            elapsed, code = await agent.stop()
            if code != 0:
                raise RuntimeError(f"{agent.user_id}: an idle stop exited {code}")
            stops.append(elapsed)
    return readies


async def hold_call(
    stack: DevStack, kiosk: RunAgent, provider: RunAgent, http: aiohttp.ClientSession
) -> None:
    """Consent, check-in, join and the call through the APIs, until video is live both ways."""
    check_in = await consented_check_in(stack, KIOSK, PATIENT, PROVIDER, "appt-bench-agent")
    await kiosk.call(http, "POST", "/v1/check-in", check_in)
    await provider.until(http, in_state("checked-in"), "saw the check-in", STEP_WITHIN)
    one = f"/v1/consultations/{CONSULTATION}"
    await provider.call(http, "POST", f"{one}/join")
    await kiosk.until(http, in_state("connecting"), "saw the provider join", STEP_WITHIN)
    await provider.call(http, "POST", f"{one}/call")
    for end in (kiosk, provider):
        await end.until(http, lambda status: call_status(status) == "live", "had a live call", MEDIA_WITHIN)


async def call_memory(kiosk: RunAgent, provider: RunAgent, seconds: float) -> dict[str, Any]:
    """Each side's peak memory, sampled every second for ``seconds`` of the live call."""
    peaks: dict[str, dict[str, float]] = {"kiosk": {}, "provider": {}}
    for _ in range(max(1, round(seconds))):
        for name, end in (("kiosk", kiosk), ("provider", provider)):
            sample = await asyncio.to_thread(memory, end.pid)
            for key, value in sample.items():
                peaks[name][key] = max(peaks[name].get(key, 0.0), value)
        await asyncio.sleep(1.0)  # the sampling period: a measurement window, not a wait for an event
    return peaks


async def stop_with_full_outbox(
    stack: DevStack,
    kiosk: RunAgent,
    provider: RunAgent,
    http: aiohttp.ClientSession,
    messages: int,
    relay: str = "refusing",
) -> dict[str, Any]:
    """The call ended (the consultation goes on), PubNub refusing everything (``relay``
    "refusing": 503s) or answering nothing ("silent": the network gone, the stop's worst case),
    ``messages`` chat messages queued on the kiosk; then its SIGTERM to exit."""
    await provider.call(http, "POST", f"/v1/consultations/{CONSULTATION}/end-call")
    await kiosk.until(
        http,
        lambda status: call_status(status) in (None, "idle", "ended", "failed"),
        "ended its call",
        STEP_WITHIN,
    )
    if relay == "silent":
        stack.relay.stall()
    else:
        stack.relay.fail_next(10**9, 503)
    try:
        for n in range(messages):
            await kiosk.call(http, "POST", "/v1/chat", {"text": f"bench message {n}"})
        backlog = (await kiosk.call(http, "GET", "/v1/status"))["outboxBacklog"]
        elapsed, code = await kiosk.stop()
    finally:
        stack.relay.fail_next(0, 503)
        stack.relay.resume()
    # Nothing lost: what was not sent is still in the file (opened read-only, the agent is gone).
    left = await asyncio.to_thread(outbox_rows, Path(kiosk.environment["TELEHEALTH_STATE_DIR"]))
    assert kiosk.process is not None
    return {
        "seconds": round(elapsed, 3),
        "agent_s": stopped_seconds(kiosk.process.written().decode(errors="replace")),
        "exit_code": code,
        "outbox_backlog_before": backlog,
        "outbox_rows_after": left,
        "relay": relay,
    }


async def reconnect_after_outage(
    stack: DevStack, provider: RunAgent, http: aiohttp.ClientSession, down_seconds: float
) -> dict[str, Any]:
    """A provider's cart started while PubNub is unreachable: READY at once, then retrying; the
    origin comes back after ``down_seconds`` (on the same port): how long until the cart is up again
    (its ``agent started`` line: token, subscriptions, catch-up done)."""
    if provider.running:
        await provider.stop()
    await stack.relay.stop()
    try:
        ready = await provider.start()  # READY while the origin is down: it retries behind it
        assert provider.process is not None
        await asyncio.sleep(down_seconds)  # the outage: the cart backs off meanwhile
        survived = provider.running
        said = (await provider.call(http, "GET", "/v1/status"))["status"]  # STATUS='s line too
    finally:
        back = time.monotonic()
        await stack.relay.start()
    await provider.process.wait_line(lambda line: "agent started role=provider" in line, within=STEP_WITHIN)
    return {
        "down_s": down_seconds,
        "ready_while_down_s": round(ready, 3),
        "status_while_down": said,
        "running_through_the_outage": survived,
        "up_after_origin_back_s": round(time.monotonic() - back, 3),
    }


def stopped_seconds(output: str) -> float | None:
    """What the agent's last stop said it took (``agent stopped seconds=``), if it said so."""
    found = re.findall(r"agent stopped seconds=([0-9.]+)", output)
    return float(found[-1]) if found else None


def outbox_rows(state_dir: Path) -> int:
    """How many items wait in the outbox file (their count only: the blobs stay sealed)."""
    with contextlib.closing(sqlite3.connect(f"file:{state_dir / OUTBOX_FILE}?mode=ro", uri=True)) as db:
        return int(db.execute("SELECT COUNT(*) FROM pending").fetchone()[0])


def verdict(value: float | None, under: float) -> dict[str, Any]:
    passed = value is not None and value < under
    return {"value": value, "under": under, "verdict": "pass" if passed else "fail"}


def targets(results: dict[str, Any], *, stop_measured: bool = True) -> dict[str, Any]:
    ready = results.get("ready_s", {})
    idle = results.get("idle_rss_mb", {}).get("kiosk", {})
    stop = results.get("stop", {})
    found = {
        "ready_kiosk_s": verdict(ready.get("kiosk", {}).get("median"), TARGETS["ready_s"]),
        "ready_provider_s": verdict(ready.get("provider", {}).get("median"), TARGETS["ready_s"]),
        "idle_rss_kiosk_agent_mb": verdict(idle.get("agent"), TARGETS["idle_rss_mb"]),
    }
    if stop_measured:
        found["stop_full_outbox_s"] = verdict(stop.get("seconds"), TARGETS["stop_s"])
    return found


async def run(args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {}
    errors: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="bench-agent-") as temporary:
        directory = Path(temporary)
        async with (
            DevStack(providers=(PROVIDER,), kiosks=(KIOSK,)) as stack,
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=STEP_WITHIN)) as http,
        ):
            audio = await asyncio.to_thread(alsa_environment, directory / "media")
            agents = {}
            for user_id in (PROVIDER, KIOSK):
                environment = {
                    **unset_environment(),
                    **stack.agent_environment(user_id),
                    **await asyncio.to_thread(media_environment, directory / "media" / user_id),
                    **audio,
                    "TELEHEALTH_STATE_DIR": str(directory / "state" / user_id),
                    "TELEHEALTH_LOG_FORMAT": "kv",
                }
                agents[user_id] = RunAgent(user_id, environment, directory)
            kiosk, provider = agents[KIOSK], agents[PROVIDER]
            phase = "start"
            try:
                stops: list[float] = []
                ready = {
                    "provider": summary(await measure_starts(provider, args.starts, stops)),
                    "kiosk": summary(await measure_starts(kiosk, args.starts, stops)),
                }
                results["ready_s"] = ready
                results["idle_stop_s"] = summary(stops) if stops else None
                if not args.only_stop:
                    phase = "idle"
                    await asyncio.sleep(args.idle)  # idle for a while: the number is the settled one
                    results["idle_rss_mb"] = {
                        "kiosk": await asyncio.to_thread(memory, kiosk.pid),
                        "provider": await asyncio.to_thread(memory, provider.pid),
                        "after_seconds": args.idle,
                    }
                if not args.ready_only:
                    phase = "call"
                    await hold_call(stack, kiosk, provider, http)
                    if not args.only_stop:
                        results["call_rss_mb"] = await call_memory(kiosk, provider, args.call_seconds)
                    phase = "stop"
                    results["stop"] = await stop_with_full_outbox(
                        stack, kiosk, provider, http, args.messages, args.relay
                    )
                if not args.ready_only and not args.only_stop:
                    phase = "reconnect"
                    results["reconnect"] = await reconnect_after_outage(stack, provider, http, args.outage)
            except Exception as exc:  # report what was measured, and where it stopped
                errors[phase] = f"{type(exc).__name__}: {exc}"
            finally:
                for agent in (kiosk, provider):
                    if agent.process is not None and agent.process.process.returncode is None:
                        try:
                            await agent.stop()
                        except Exception as exc:
                            errors[f"stop {agent.user_id}"] = f"{type(exc).__name__}: {exc}"
                            await agent.kill()
    results["targets"] = targets(results, stop_measured=not args.ready_only)
    results["setup"] = {
        "video": "640x480@30",
        "starts": args.starts,
        "idle_seconds": args.idle,
        "call_seconds": args.call_seconds,
        "messages": args.messages,
        "ready_only": args.ready_only,
        "only_stop": args.only_stop,
        "relay": args.relay,
        "command": " ".join(agent_command()),
    }
    if errors:
        results["errors"] = errors
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--starts", type=int, default=3, help="starts to READY of each agent (default 3)")
    parser.add_argument(
        "--idle", type=float, default=5.0, help="seconds idle before the idle RSS (default 5)"
    )
    parser.add_argument(
        "--call-seconds", type=float, default=10.0, help="seconds of call sampled (default 10)"
    )
    parser.add_argument("--messages", type=int, default=200, help="chat messages queued before the stop")
    parser.add_argument(
        "--outage",
        type=float,
        default=10.0,
        help="seconds PubNub stays unreachable after a cart's start, before it comes back (default 10)",
    )
    parser.add_argument(
        "--ready-only",
        action="store_true",
        help="only the starts to READY and the idle RSS (no call, no stop with a full outbox)",
    )
    parser.add_argument(
        "--only-stop",
        action="store_true",
        help="measure the stop with a full outbox only (one start each, no memory sampling)",
    )
    parser.add_argument(
        "--relay",
        choices=("refusing", "silent"),
        default="refusing",
        help="PubNub during the stop: every request answered 503 (default) or none answered at all",
    )
    args = parser.parse_args()
    if args.ready_only and args.only_stop:
        parser.error("--ready-only and --only-stop measure different things: one at a time")
    if args.only_stop:
        args.starts = 1
    if args.starts < 1 or args.idle < 0 or args.call_seconds <= 0 or args.messages < 1:
        parser.error("--starts and --messages must be at least 1, --idle at least 0, --call-seconds above 0")
    logs.configure("WARNING")
    for handler in logging.getLogger().handlers:  # stdout is the JSON's: the stack's warnings go aside
        if isinstance(handler, logging.StreamHandler):
            handler.setStream(sys.stderr)
    compile_the_product()
    return write_results(lambda: asyncio.run(run(args)))


if __name__ == "__main__":
    sys.exit(main())
