"""The local API benchmark on the development stack, during a call, beside the bare event hub.

A kiosk agent and a provider agent (``Agent`` with its API, as ``telehealth-agent run`` builds it)
on the development stack (relay enforcing Access Manager, clinic stand-in, coturn) are driven
through their APIs into a consultation whose call runs at 640x480, 30 fps, both ways (synthetic
video files as cameras, in the agents' media children). While the call runs, it prints JSON:

- ``status_ms``: ``GET /v1/status`` on the kiosk, one request at a time (p50/p95);
- ``chat_send_ms``: ``POST /v1/chat`` on the kiosk (durable once answered: outbox and audit on disk);
- ``sse_delivery_ms``: an event emitted on the kiosk's hub until a client of ``GET /v1/events``
  has parsed it (same process, same clock), beside ``bare_hub_ms``: the same event from the hub to
  an in-process subscriber (no HTTP), samples alternating one by one so both see the same load;
- ``preview``: ``GET /v1/previews/remote`` on the kiosk read for ``--seconds``: JPEG parts per
  second, and ``call_received_fps`` both ways over the same seconds (the media children's count of
  decoded remote video frames);
- ``targets``: status p50 under 2 ms, SSE delivery p50 under 5 ms, preview at least 5 fps while
  the call keeps 30 fps (each way at least 27 fps received: within 10 %), each with ``pass``;
- ``machine``: the cores and the load average before and after (the numbers are the API's own
  only on a quiet machine).

    .venv/bin/python scripts/bench_api.py [--requests 200] [--seconds 10]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
from bench_consultation import stats

from devices import synthetic
from telehealth_client import events, logs
from telehealth_client.agent import Agent
from telehealth_client.api.routing import STATE_KEY
from telehealth_client.config import load_settings
from telehealth_client.protocol import channels
from telehealth_client.protocol.messages import ConsultationState
from telehealth_client.security.clinic_client import ClinicClient
from telehealth_devstack.demo.witness import Witness
from telehealth_devstack.stack import DEFAULT_DEPARTMENT, DevStack

KIOSK = "kiosk-bench-api"
PROVIDER = "dr-bench-api"
PATIENT = "pat-bench-api"
CONSULTATION = channels.consultation(PROVIDER, PATIENT)
WAIT_SECONDS = 15.0
MEDIA_WAIT_SECONDS = 60.0  # the media children start (aiortc's import) on a shared machine
WARM_UP = 10  # samples of each kind dropped before measuring (first requests open connections)
SSE_MARK = "bench.sse"  # the consultation ID of the events this benchmark emits
VIDEO = (640, 480, 30.0)
TARGETS = {"status_p50_ms": 2.0, "sse_delivery_p50_ms": 5.0, "preview_fps_min": 5.0, "call_fps_min": 27.0}


def media_environment(directory: Path) -> dict[str, str]:
    """A 640x480 30 fps video as the camera, a tone as the microphone, a speaker writing to a file.

    The ALSA configuration is the process's (the media children inherit the agent's environment,
    not its settings), so both agents share one: set in ``os.environ`` by ``run``."""
    directory.mkdir(parents=True, exist_ok=True)
    width, height, fps = VIDEO
    video = synthetic.write_video(directory / "camera.mkv", "normal", 60, width, height, fps)
    return {"TELEHEALTH_MEDIA": "true", "TELEHEALTH_CAMERA": str(video)}


def alsa_environment(directory: Path) -> dict[str, str]:
    """The microphone and speaker settings, and the ALSA variables that define them."""
    directory.mkdir(parents=True, exist_ok=True)
    tone = synthetic.write_pcm(directory / "microphone.raw", "tone", seconds=120.0)
    alsa = synthetic.write_alsa_config(directory / "alsa", tone, loopback=False)
    assert alsa.microphone is not None and alsa.speaker is not None
    return {"TELEHEALTH_MICROPHONE": alsa.microphone, "TELEHEALTH_SPEAKER": alsa.speaker, **alsa.env}


class RunningAgent:
    """An agent with its API, what its hub told (``witness``) and an HTTP client for its API."""

    def __init__(self, agent: Agent, token: str, http: aiohttp.ClientSession) -> None:
        self.agent = agent
        self.witness = Witness(agent.settings.user_id, agent.hub)
        self.headers = {"Authorization": f"Bearer {token}"}
        self.http = http

    @property
    def base(self) -> str:
        assert self.agent.api is not None and self.agent.api.address is not None
        return self.agent.api.address

    async def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        async with self.http.request(method, self.base + path, json=body, headers=self.headers) as answer:
            return answer.status, await answer.json()

    async def seen(self, matches: Callable[[Any], bool], within: float = WAIT_SECONDS) -> None:
        await asyncio.wait_for(self.witness.seen(matches), within)

    async def received_video_frames(self) -> int:
        """The frames of remote video the media child of this end's call decoded so far."""
        worker = self._call().worker
        assert worker is not None, "the call has no media child now"
        return int((await worker.stats())["received"]["video"])

    def _call(self) -> Any:
        if self.agent.patient is not None:
            return self.agent.patient.call
        assert self.agent.api is not None
        return self.agent.api.app[STATE_KEY].calls[CONSULTATION]  # type: ignore[attr-defined]


def state_is(state: ConsultationState) -> Callable[[Any], bool]:
    return lambda e: (
        isinstance(e, events.StateChanged) and e.consultation_id == CONSULTATION and e.state is state
    )


def video_flowing(event: Any) -> bool:
    return isinstance(event, events.MediaFlowing) and event.media == "video"


async def start_agent(
    stack: DevStack, user_id: str, directory: Path, http: aiohttp.ClientSession, audio: dict[str, str]
) -> RunningAgent:
    environment = {
        **stack.agent_environment(user_id),
        "TELEHEALTH_STATE_DIR": str(directory / user_id),
        **await asyncio.to_thread(media_environment, directory / "media" / user_id),
        **audio,
    }
    agent = Agent(load_settings(environ=environment), serve_api=True)
    running = RunningAgent(agent, environment["TELEHEALTH_API_TOKEN"], http)
    await agent.start()
    return running


async def consented_check_in(
    stack: DevStack, kiosk: str, patient: str, provider: str, appointment: str
) -> dict[str, str]:
    """The patient's consent recorded at the clinic (with ``kiosk``'s credential); the check-in's
    body for ``provider``."""
    assert stack.clinic is not None
    async with contextlib.aclosing(ClinicClient(stack.clinic.url, stack.kiosk_credential(kiosk))) as clinic:
        await clinic.record_consent(patient, True, None)
    return {
        "appointmentId": appointment,
        "patientId": patient,
        "providerId": provider,
        "departmentId": DEFAULT_DEPARTMENT,
    }


async def call_under_way(stack: DevStack, kiosk: RunningAgent, provider: RunningAgent) -> None:
    """Consent, check-in, join and the call, each through the agents' APIs; returns once video
    flows both ways."""
    check_in = await consented_check_in(stack, KIOSK, PATIENT, PROVIDER, "appt-bench-api")
    status, answer = await kiosk.call("POST", "/v1/check-in", check_in)
    assert status == 201, answer
    await provider.seen(state_is(ConsultationState.CHECKED_IN))
    one = f"/v1/consultations/{CONSULTATION}"
    status, answer = await provider.call("POST", f"{one}/join")
    assert status == 200, answer
    await kiosk.seen(state_is(ConsultationState.CONNECTING))
    status, answer = await provider.call("POST", f"{one}/call")
    assert status == 200, answer
    for running in (kiosk, provider):
        await running.seen(video_flowing, MEDIA_WAIT_SECONDS)


async def request_latency(
    kiosk: RunningAgent, requests: int, method: str, path: str, body: Any
) -> list[float]:
    samples: list[float] = []
    for n in range(requests + WARM_UP):
        started = time.perf_counter()
        status, answer = await kiosk.call(method, path, body)
        elapsed = (time.perf_counter() - started) * 1000
        assert status < 300, answer
        if n >= WARM_UP:
            samples.append(elapsed)
    return samples


def bench_event(n: int) -> events.QueueUpdated:
    """Sample ``n``: an event the agent's own parts never emit for this consultation ID."""
    return events.QueueUpdated(SSE_MARK, n, 0)


async def sse_frames(response: aiohttp.ClientResponse) -> AsyncIterator[tuple[float, dict[str, Any]]]:
    """(when parsed, its data) of each event of a Server-Sent Events answer, as the lines arrive."""
    while True:
        line = await response.content.readline()
        if not line:
            return
        if line.startswith(b"data: "):
            data = json.loads(line[6:])
            yield time.perf_counter(), data


async def event_latency(kiosk: RunningAgent, samples: int) -> tuple[list[float], list[float]]:
    """(SSE delivery ms, bare hub ms), one event in flight at a time, alternating."""
    hub = kiosk.agent.hub
    bare = hub.subscribe(max_pending=64)
    sse_ms: list[float] = []
    bare_ms: list[float] = []
    timeout = aiohttp.ClientTimeout(total=None, sock_read=WAIT_SECONDS)
    url = kiosk.base + "/v1/events"
    try:
        async with kiosk.http.get(url, headers=kiosk.headers, timeout=timeout) as stream:
            assert stream.status == 200, await stream.text()
            frames = sse_frames(stream)
            for n in range(samples + WARM_UP):
                emitted = time.perf_counter()
                hub.emit(bench_event(n))
                async for parsed, data in frames:
                    if data.get("consultation_id") == SSE_MARK and data.get("position") == n:
                        if n >= WARM_UP:
                            sse_ms.append((parsed - emitted) * 1000)
                        break
                # The bare subscriber got the same event too: drain it, then time one of its own.
                await _next_bench_event(bare, n)
                emitted = time.perf_counter()
                hub.emit(bench_event(-n - 1))
                await _next_bench_event(bare, -n - 1)
                if n >= WARM_UP:
                    bare_ms.append((time.perf_counter() - emitted) * 1000)
    finally:
        bare.close()
    return sse_ms, bare_ms


async def _next_bench_event(subscription: Any, position: int) -> None:
    async def until() -> None:
        async for event in subscription:
            ours = isinstance(event, events.QueueUpdated) and event.consultation_id == SSE_MARK
            if ours and event.position == position:
                return

    await asyncio.wait_for(until(), WAIT_SECONDS)


async def mjpeg_count(response: aiohttp.ClientResponse, until: float) -> int:
    """How many JPEG parts arrive (each header's Content-Length, then that many bytes) before ``until``."""
    count = 0
    buffer = b""
    while time.monotonic() < until:
        head = re.search(rb"Content-Length: (\d+)\r\n\r\n", buffer)
        if head is not None and len(buffer) >= head.end() + int(head.group(1)):
            count += 1
            buffer = buffer[head.end() + int(head.group(1)) :]
            continue
        with contextlib.suppress(TimeoutError):
            buffer += await asyncio.wait_for(response.content.readany(), max(0.01, until - time.monotonic()))
    return count


async def received_fps(ends: tuple[RunningAgent, RunningAgent], during: Any) -> tuple[dict[str, float], Any]:
    """Each end's received video fps while ``during`` (a coroutine) runs, and what it returned."""
    before = [await end.received_video_frames() for end in ends]
    started = time.monotonic()
    result = await during
    elapsed = time.monotonic() - started
    after = [await end.received_video_frames() for end in ends]
    names = ("kiosk", "provider")
    return {
        name: round((a - b) / elapsed, 2) for name, b, a in zip(names, before, after, strict=True)
    }, result


async def preview_fps(kiosk: RunningAgent, provider: RunningAgent, seconds: float) -> dict[str, Any]:
    """The call's received fps both ways for ``seconds`` with no preview watched, then the kiosk's
    remote preview read for ``seconds`` (after its first image) and the call's fps meanwhile."""
    ends = (kiosk, provider)
    without, _ = await received_fps(ends, asyncio.sleep(seconds))  # the measuring window itself
    timeout = aiohttp.ClientTimeout(total=None, sock_read=WAIT_SECONDS)
    url = kiosk.base + "/v1/previews/remote"
    async with kiosk.http.get(url, headers=kiosk.headers, timeout=timeout) as stream:
        assert stream.status == 200, await stream.text()
        await mjpeg_count(stream, time.monotonic() + 1.0)  # the child starts encoding on the first watch
        started = time.monotonic()
        during, images = await received_fps(ends, mjpeg_count(stream, started + seconds))
        elapsed = time.monotonic() - started
    return {
        "fps": round(images / elapsed, 2),
        "images": images,
        "seconds": round(elapsed, 2),
        "call_received_fps": during,
        "call_received_fps_without_preview": without,
    }


def verdicts(results: dict[str, Any]) -> dict[str, Any]:
    call_fps = results["preview"]["call_received_fps"]
    checks = {
        "status_p50_under_2_ms": results["status_ms"]["p50"] < TARGETS["status_p50_ms"],
        "sse_delivery_p50_under_5_ms": results["sse_delivery_ms"]["p50"] < TARGETS["sse_delivery_p50_ms"],
        "preview_at_least_5_fps": results["preview"]["fps"] >= TARGETS["preview_fps_min"],
        "call_keeps_30_fps_during_preview": min(call_fps.values()) >= TARGETS["call_fps_min"],
    }
    return {name: "pass" if ok else "fail" for name, ok in checks.items()}


async def run(requests: int, seconds: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-api-") as temporary:
        directory = Path(temporary)
        async with (
            DevStack(providers=(PROVIDER,), kiosks=(KIOSK,)) as stack,
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=WAIT_SECONDS)) as http,
        ):
            audio = await asyncio.to_thread(alsa_environment, directory / "media")
            os.environ.update({k: v for k, v in audio.items() if not k.startswith("TELEHEALTH_")})
            started: list[RunningAgent] = []
            try:
                provider = await start_agent(stack, PROVIDER, directory, http, audio)
                started.append(provider)
                kiosk = await start_agent(stack, KIOSK, directory, http, audio)
                started.append(kiosk)
                await call_under_way(stack, kiosk, provider)
                results: dict[str, Any] = {
                    "status_ms": stats(await request_latency(kiosk, requests, "GET", "/v1/status", None)),
                    "chat_send_ms": stats(
                        await request_latency(kiosk, requests, "POST", "/v1/chat", {"text": "bench message"})
                    ),
                }
                sse_ms, bare_ms = await event_latency(kiosk, requests)
                results["sse_delivery_ms"] = stats(sse_ms)
                results["bare_hub_ms"] = stats(bare_ms)
                results["preview"] = await preview_fps(kiosk, provider, seconds)
            finally:
                for running in reversed(started):
                    await running.agent.aclose()
                    await running.witness.aclose()
    results["targets"] = {**TARGETS, "verdicts": verdicts(results)}
    results["setup"] = {"video": "640x480@30", "requests": requests, "preview_seconds": seconds}
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--requests", type=int, default=200, help="samples of each latency (default 200)")
    parser.add_argument("--seconds", type=float, default=10.0, help="preview read time (default 10)")
    args = parser.parse_args()
    if args.requests < 1 or args.seconds <= 0:
        parser.error("--requests must be at least 1 and --seconds above 0")
    logs.configure("WARNING")
    return write_results(lambda: asyncio.run(run(args.requests, args.seconds)))


def write_results(measure: Callable[[], dict[str, Any]]) -> int:
    """Run ``measure`` and write its results as JSON on stdout, with the machine's cores and load
    around the run (shared machines: the load says how far the numbers are the code's own)."""
    load_before = os.getloadavg()[0]
    results = measure()
    results["machine"] = {
        "cores": os.cpu_count(),
        "load_average_1min_before": round(load_before, 2),
        "load_average_1min_after": round(os.getloadavg()[0], 2),
    }
    json.dump(results, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
