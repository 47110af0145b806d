"""The graceful stop (issue 24): ``telehealth-agent run`` on a kiosk, stopped by SIGTERM as systemd
stops kiosk.service, mid-consultation and mid-call, on the real development stack (relay, clinic
stand-in, coturn), with a provider's cart agent (media on, in this process) as the peer.

- Network up: the provider's call ends by the kiosk's ``end-call`` and the patient's presence
  leave reaches it at once; the audit sink holds every event the kiosk's trail recorded (the
  stop's own included); the chat sent just before is at the provider or still in the outbox on
  disk; exit 0 without using up any budget; started again, the kiosk resumes the consultation from
  the state file the stop kept.
- Network gone (PubNub's requests held without an answer, the clinic refusing connections): exit 0
  within the stop's one deadline (``stop_budgets.STOP_SECONDS``, not the sum of its steps'
  budgets); the chat and the audit events that could not go are on disk, and a start with the
  network back sends them.
- A full outbox with PubNub refusing every request (issue 24's benchmark case): the flush gives up
  at its first round of failures, not at the deadline; every message is on disk, the audit sink
  holds every event all the same.
- A provider's cart (``telehealth-agent run`` too) with the network gone: exit 0 within the
  deadline, its chat on disk, its consultation's state file kept.
- A second SIGTERM during a stop exits at once, without finishing it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import signal
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from telehealth_client import events
from telehealth_client.audit.trail import read_status
from telehealth_client.consultation import state_file
from telehealth_client.consultation.provider_sessions import CONSULTATIONS_DIR
from telehealth_client.durability import OUTBOX_FILE, OUTBOX_PURPOSE
from telehealth_client.durable.at_rest import Sealer
from telehealth_client.durable.outbox import Outbox
from telehealth_client.protocol.messages import ConsultationState
from telehealth_client.stop_budgets import WORST_CASE_SECONDS
from telehealth_devstack.network import CuttableLink
from telehealth_devstack.stack import DevStack
from tests.support import api_fixtures
from tests.support.api import (
    CHECK_IN,
    CONSULTATION,
    KIOSK,
    PATIENT,
    PROVIDER,
    Agents,
    RunningAgent,
    record_consent,
)
from tests.support.audit import sink_events
from tests.support.cli import AGENT, Process, unset_environment
from tests.support.media import devices_environment
from tests.support.recorder import Recorder
from tests.support.service import unit_settings

pytestmark = pytest.mark.integration

# The shared fixtures, bound here so that pytest finds them.
http = api_fixtures.http
agents = api_fixtures.agents

MEDIA_WAIT = 60.0  # media children start (aiortc's import) on a shared 2-core machine
WAIT = 30.0
ONE = f"/v1/consultations/{CONSULTATION}"
# systemd SIGKILLs the service this long after its SIGTERM.
STOP_TIMEOUT = float(dict(unit_settings())["TimeoutStopSec"].removesuffix("s"))
# The agent's own stop (its ``agent stopped seconds=``) beyond the deadline: the stop's local work
# (the media children's close, the stores') on a busy machine. The steps' budgets one after another
# (5 s and more before issue 24's one deadline) do not fit in it.
LOCAL_SECONDS = 2.5
# SIGTERM to exit beyond that: the signal's handling and the exit on a busy machine (about 10 ms
# on a quiet one, scripts/bench_agent.py --only-stop; seconds were seen under a load average of 8).
SLACK_SECONDS = 5.0


@pytest.fixture
async def stack() -> AsyncIterator[DevStack]:
    async with DevStack(providers=(PROVIDER,), kiosks=(KIOSK,)) as running:
        try:
            yield running
        finally:
            running.relay.resume()  # a test that failed with PubNub held: the peer's close needs it


@pytest.fixture
async def kiosks() -> AsyncIterator[list[Process]]:
    """The agent processes a test started: any still running at its end is stopped."""
    started: list[Process] = []
    yield started
    for process in started:
        await process.stop()


class Kiosk:
    """``telehealth-agent run`` as kiosk.service runs it (a kiosk's, or a cart's), driven through its
    local API; ``events`` records its event stream (``GET /v1/events``) once ``follow`` started it."""

    def __init__(self, process: Process, base: str, token: str, http: aiohttp.ClientSession) -> None:
        self.process = process
        self.base = base
        self.token = token
        self.http = http
        self.events = Recorder()
        self._follower: asyncio.Task[None] | None = None

    @classmethod
    async def start(cls, env: dict[str, str], http: aiohttp.ClientSession, started: list[Process]) -> Kiosk:
        process = await Process.spawn(*AGENT, "run", env=env)
        started.append(process)
        line = await process.next_line("local api listening address=", within=WAIT)
        found = re.search(r"address=(http://127\.0\.0\.1:\d+)", line)
        assert found, line
        return cls(process, found.group(1), env["TELEHEALTH_API_TOKEN"], http)

    async def follow(self) -> None:
        """Start recording its hub's events, each the JSON object of a Server-Sent Event's data."""
        response = await self.http.get(
            self.base + "/v1/events",
            headers={"Authorization": f"Bearer {self.token}"},
            timeout=aiohttp.ClientTimeout(total=None),
        )
        assert response.status == 200, await response.text()

        async def read() -> None:
            with contextlib.suppress(aiohttp.ClientError):  # the stream ends with the process
                async for raw in response.content:
                    if raw.startswith(b"data: "):
                        self.events.add(json.loads(raw[len(b"data: ") :]))
            response.release()

        self._follower = asyncio.create_task(read())

    def wrote(self, fragment: str) -> bool:
        return any(fragment in line for line in self.process.lines)

    async def post(self, path: str, body: Any = None) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {self.token}"}
        async with self.http.post(self.base + path, json=body, headers=headers) as response:
            return response.status, await response.json()

    async def chat(self, text: str) -> str:
        status, answer = await self.post("/v1/chat", {"text": text})
        assert status == 201, answer
        message_id: str = answer["message"]["id"]
        return message_id

    async def sigterm(self) -> tuple[int, float, str]:
        """SIGTERM, as systemd stops the unit: (exit code, seconds until it exited, all it wrote)."""
        began = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        code = await self.process.exited(STOP_TIMEOUT * 2)
        took = time.monotonic() - began
        _, out, err = await self.process.finish()
        if self._follower is not None:
            await self._follower
        return code, took, out + err


def stopped_in(output: str) -> float:
    """The seconds the agent's stop took, as it said (``agent stopped seconds=``)."""
    found = re.findall(r"agent stopped seconds=([0-9.]+)", output)
    assert found, output
    return float(found[-1])


def assert_within_the_deadline(took: float, output: str) -> None:
    """The agent's own stop and its exit after SIGTERM (``took``) within the stop's one deadline."""
    assert stopped_in(output) < WORST_CASE_SECONDS + LOCAL_SECONDS, output
    assert took < WORST_CASE_SECONDS + LOCAL_SECONDS + SLACK_SECONDS, (took, output)


def kiosk_environment(stack: DevStack, tmp_path: Path, *, media: bool = True, **extra: str) -> dict[str, str]:
    return {
        **unset_environment(),
        **stack.agent_environment(KIOSK),
        "TELEHEALTH_STATE_DIR": str(tmp_path / "kiosk-state"),
        "TELEHEALTH_RECONNECT_MAX_SECONDS": "1",
        "TELEHEALTH_MEDIA": "true" if media else "false",
        **(devices_environment(tmp_path, "patient") if media else {}),
        **extra,
    }


async def checked_in_kiosk(
    stack: DevStack, tmp_path: Path, http: aiohttp.ClientSession, kiosks: list[Process]
) -> tuple[Kiosk, dict[str, str]]:
    """A kiosk without media started as the service and checked in (its consent recorded), and
    its environment."""
    env = kiosk_environment(stack, tmp_path, media=False)
    kiosk = await Kiosk.start(env, http, kiosks)
    await record_consent(stack)
    status, answer = await kiosk.post("/v1/check-in", CHECK_IN)
    assert status == 201, answer
    return kiosk, env


def video_flowing(event: object) -> bool:
    return (
        isinstance(event, events.MediaFlowing)
        and event.consultation_id == CONSULTATION
        and event.media == "video"
    )


def call_ended_by_the_kiosk(event: object) -> bool:
    return (
        isinstance(event, events.CallStateChanged)
        and event.consultation_id == CONSULTATION
        and event.phase == "ended"
        and event.reason == "remote-hangup"  # the kiosk's end-call, not a stall of its media
    )


def patient_is(kind: str) -> Callable[[object], bool]:
    """A roster change of the patient's presence: ``present`` (a join) or ``absent`` (a leave)."""
    return lambda event: (
        isinstance(event, events.RosterChanged)
        and any(change.user_id == PATIENT and change.kind == kind for change in event.changes)
    )


async def seen_since(agent: RunningAgent, mark: int, matches: Callable[[object], bool]) -> None:
    """Until ``agent``'s hub has told an event that ``matches`` after its first ``mark`` events."""
    await agent.seen.until(lambda: any(matches(e) for e in agent.seen.items[mark:]), within=WAIT)


def chat_arrived(message_id: str) -> Callable[[object], bool]:
    return lambda event: isinstance(event, events.ChatMessageAdded) and event.message_id == message_id


async def call_under_way(stack: DevStack, kiosk: Kiosk, provider: RunningAgent) -> None:
    """Checked in through the kiosk's API, joined and called through the provider's: video flows
    from the kiosk and the consultation is in progress."""
    await record_consent(stack)
    status, answer = await kiosk.post("/v1/check-in", CHECK_IN)
    assert status == 201, answer
    assert provider.agent.provider is not None
    await provider.seen.until(
        lambda: any(p.consultation_id == CONSULTATION for p in provider.agent.provider.queue),  # type: ignore[union-attr]
        within=WAIT,
    )
    assert (await provider.api.post(f"{ONE}/join"))[0] == 200
    status, answer = await provider.api.post(f"{ONE}/call")
    assert status == 200, answer
    await provider.wait_event(video_flowing, within=MEDIA_WAIT)
    await provider.wait_state(ConsultationState.IN_PROGRESS)


async def outbox_on_disk(env: dict[str, str]) -> list[str]:
    """The ids of what waits in the kiosk's outbox file, opened as the agent opens it."""
    sealer = Sealer(env["TELEHEALTH_CIPHER_KEY"], (), purpose=OUTBOX_PURPOSE)
    outbox = Outbox(Path(env["TELEHEALTH_STATE_DIR"]) / OUTBOX_FILE, sealer)
    try:
        return [item.id for item in await outbox.open()]
    finally:
        await outbox.aclose()


async def assert_trail_delivered(stack: DevStack, env: dict[str, str]) -> None:
    """Every event the kiosk's trail recorded (its sequences 1..n) is in the sink, and the trail
    holds none that still awaits the sink or the audit channel."""
    trail = await asyncio.to_thread(read_status, Path(env["TELEHEALTH_STATE_DIR"]))
    held = sorted(e["sequence"] for e in await sink_events(stack) if e.get("deviceId") == KIOSK)
    assert (trail.awaiting_sink, trail.awaiting_channel) == (0, 0), trail
    assert held == list(range(1, trail.base + trail.records + 1)), (held, trail)


async def test_sigterm_mid_call_sends_end_call_flushes_the_trail_and_keeps_the_consultation(
    stack: DevStack, agents: Agents, http: aiohttp.ClientSession, tmp_path: Path, kiosks: list[Process]
) -> None:
    provider = await agents.start(
        PROVIDER, TELEHEALTH_MEDIA="true", **devices_environment(tmp_path, "provider")
    )
    env = kiosk_environment(stack, tmp_path)
    kiosk = await Kiosk.start(env, http, kiosks)
    await call_under_way(stack, kiosk, provider)
    chat_id = await kiosk.chat("one last thing")

    before_stop = len(provider.seen.items)
    code, took, output = await kiosk.sigterm()
    assert code == 0, output
    assert_within_the_deadline(took, output)
    await seen_since(provider, before_stop, call_ended_by_the_kiosk)
    await seen_since(provider, before_stop, patient_is("absent"))  # a leave: the presence timeout is 120 s
    await assert_trail_delivered(stack, env)
    sink = await sink_events(stack)
    assert any(e["eventType"] == "VIDEO_SESSION_ENDED" and e.get("deviceId") == KIOSK for e in sink)
    delivered = any(chat_arrived(chat_id)(event) for event in provider.seen.items)
    assert delivered or chat_id in await outbox_on_disk(env)
    assert state_file.path_of(Path(env["TELEHEALTH_STATE_DIR"]) / "consultation").exists()

    before_start = len(provider.seen.items)
    again = await Kiosk.start(env, http, kiosks)
    # Behind READY (a kiosk is ready idle): the saved consultation resumes once the clinic answers.
    resumed = f"consultation resumed consultation={CONSULTATION} state=in-progress"
    await again.process.wait_line(lambda line: resumed in line)
    await seen_since(provider, before_start, patient_is("present"))  # back on the consultation's channel
    code, _, output = await again.sigterm()
    assert code == 0, output


async def test_sigterm_with_the_network_gone_exits_within_budget_and_keeps_what_was_not_sent(
    stack: DevStack, agents: Agents, http: aiohttp.ClientSession, tmp_path: Path, kiosks: list[Process]
) -> None:
    provider = await agents.start(
        PROVIDER, TELEHEALTH_MEDIA="true", **devices_environment(tmp_path, "provider")
    )
    assert stack.clinic is not None
    async with CuttableLink(stack.clinic.url.removeprefix("http://")) as clinic_link:
        env = kiosk_environment(stack, tmp_path, TELEHEALTH_CLINIC_URL=f"http://{clinic_link.origin}")
        kiosk = await Kiosk.start(env, http, kiosks)
        await call_under_way(stack, kiosk, provider)
        stack.relay.stall()  # PubNub holds every request: no answer, no error
        clinic_link.cut()  # the clinic refuses connections
        chat_id = await kiosk.chat("sent into the void")

        code, took, output = await kiosk.sigterm()
        assert code == 0, output
        assert_within_the_deadline(took, output)
        assert chat_id in await outbox_on_disk(env)
        left = await asyncio.to_thread(read_status, Path(env["TELEHEALTH_STATE_DIR"]))
        assert left.awaiting_sink > 0, left

        stack.relay.resume()
        clinic_link.restore()
        again = await Kiosk.start(env, http, kiosks)
        await provider.wait_event(chat_arrived(chat_id), within=WAIT)
        code, _, output = await again.sigterm()
        assert code == 0, output
    await assert_trail_delivered(stack, env)


async def test_sigterm_with_a_full_outbox_and_pubnub_refusing_gives_up_at_once_and_keeps_it(
    stack: DevStack, http: aiohttp.ClientSession, tmp_path: Path, kiosks: list[Process]
) -> None:
    kiosk, env = await checked_in_kiosk(stack, tmp_path, http, kiosks)
    stack.relay.fail_next(10**9, 503)  # PubNub answers every request with 503
    try:
        queued = [await kiosk.chat(f"queued {n}") for n in range(50)]
        await kiosk.process.wait_line(lambda line: "outbox publish failed" in line)  # it is trying
        code, took, output = await kiosk.sigterm()
    finally:
        stack.relay.fail_next(0, 503)
    assert code == 0, output
    # Ended by its failures, not by the deadline: no flush waits out a refusing relay.
    assert "every_channel_failing=yes" in output, output
    assert_within_the_deadline(took, output)
    assert set(queued) <= set(await outbox_on_disk(env))
    left = await asyncio.to_thread(read_status, Path(env["TELEHEALTH_STATE_DIR"]))
    assert (left.awaiting_sink, left.awaiting_channel > 0) == (0, True), left  # the clinic took its share


async def test_a_carts_sigterm_with_the_network_gone_exits_within_budget_and_keeps_its_chat(
    stack: DevStack, agents: Agents, http: aiohttp.ClientSession, tmp_path: Path, kiosks: list[Process]
) -> None:
    env = {
        **unset_environment(),
        **stack.agent_environment(PROVIDER),
        "TELEHEALTH_STATE_DIR": str(tmp_path / "provider-state"),
        "TELEHEALTH_RECONNECT_MAX_SECONDS": "1",
        "TELEHEALTH_MEDIA": "false",
    }
    cart = await Kiosk.start(env, http, kiosks)
    # Its endpoint up (READY comes before it): a join during its start is refused as "starting".
    await cart.process.next_line("agent started", within=WAIT)
    await cart.follow()
    kiosk = await agents.start(KIOSK)
    await record_consent(stack)
    status, answer = await kiosk.api.post("/v1/check-in", CHECK_IN)
    assert status == 201, answer
    await cart.events.wait_for(
        lambda e: e["kind"] == "state-changed" and e["consultation_id"] == CONSULTATION, within=WAIT
    )
    status, answer = await cart.post(f"{ONE}/join")
    assert status == 200, answer
    await kiosk.wait_state(ConsultationState.CONNECTING)
    stack.relay.stall()
    status, answer = await cart.post(f"{ONE}/chat", {"text": "waits for the network"})
    assert status == 201, answer

    code, took, output = await cart.sigterm()
    assert code == 0, output
    # A cart also leaves its emergency channel: within the same deadline.
    assert_within_the_deadline(took, output)
    assert answer["message"]["id"] in await outbox_on_disk(env)
    saved = Path(env["TELEHEALTH_STATE_DIR"]) / "consultation" / CONSULTATIONS_DIR / CONSULTATION
    assert state_file.path_of(saved).exists()


async def test_a_second_sigterm_exits_at_once(
    stack: DevStack, http: aiohttp.ClientSession, tmp_path: Path, kiosks: list[Process]
) -> None:
    kiosk, _ = await checked_in_kiosk(stack, tmp_path, http, kiosks)
    stack.relay.stall()
    await kiosk.chat("waits for the network")  # the stop now takes its budgets (flush, leave)

    kiosk.process.send_signal(signal.SIGTERM)
    await kiosk.process.next_line("signal=SIGTERM: stopping", within=WAIT)
    began = time.monotonic()
    kiosk.process.send_signal(signal.SIGTERM)
    code = await kiosk.process.exited(WAIT)
    took = time.monotonic() - began
    _, out, err = await kiosk.process.finish()
    assert code != 0, out + err  # not a clean stop: what it held is left on disk, as after a crash
    assert "agent stopped" not in out + err  # the stop was not finished
    assert took < WORST_CASE_SECONDS, took
