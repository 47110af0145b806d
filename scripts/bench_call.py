"""The call measured against raw aiortc in the same run, on the same media, through one coturn.

Prints JSON. Every measurement has two processes (caller and callee) relay-only through the
development stack's coturn on loopback, each sending the same numbered video file (a 12-bit frame
number and its complement drawn as blocks: scripts/bench_call_tap/frame_tap.py):

- ``agent``: the agent's media children (``MediaWorker.spawn``, ``start(turn, Devices(camera=file))``),
  offer and answer handed between them by this script (no PubNub);
- ``raw``: two bare ``RTCPeerConnection`` processes (scripts/bench_call_peer.py) with aiortc's
  defaults and the same camera track class on the same file.

Both kinds of process log each frame they hand to the encoder and each remote frame they show
(the agent's: what ``MediaCall`` passes to ``on_frame``) with ``time.monotonic()``, one clock for
all processes: the bench puts scripts/bench_call_tap on their PYTHONPATH, whose sitecustomize
installs the log (the media child has no per-frame output of its own). From the logs:

- ``offer_to_first_frame_ms``: the caller asked for its offer until the remote video's first frame
  shown, on each side (``both``: the later of the two);
- ``fps``, ``latency_ms`` (a shown frame's number read back, minus when the other side sent it),
  ``cpu_percent`` (of one core, from /proc/<pid>/stat) over ``--seconds`` after ``--warmup``, and
  ``peak_rss_mib`` (VmHWM) per side, at each resolution;
- recovery at 640x480, one outage after the other: coturn frozen with SIGSTOP for ``--freeze``
  seconds (from SIGCONT to the next remote frame, and to the next clean one); every UDP datagram
  between coturn's relay ports dropped on ``lo`` for ``--drop`` seconds (an iptables rule on
  ``lo`` only, removed in a ``finally``; from its removal; root and iptables needed, else the
  reason is printed instead); coturn killed and started again on the same port (from the
  restart); for the agent only (raw aiortc has no child), the kiosk's media child killed with
  SIGKILL (from the kill: the agent rebuilds in a fresh warm child). Each wait is capped at
  ``--cap`` seconds (null if no frame came), and the corrupt frames shown (unreadable, or older
  than one shown before) are counted from the outage's start until ``--settle`` seconds after
  media came back, never past the next outage's start (``watched_until_s``, from the outage's
  end: a side not live again by then is null, and nothing is counted twice). The agent's
  recovery needs its rebuild (stall -> new connection, new offer, fresh TURN credentials),
  which needs signaling: it is measured with the real endpoints (a provider calling a patient
  kiosk) over the development stack (relay, clinic, coturn), the frames logged the same way;
- end-call, for the agent only (raw aiortc has no end-call signaling: "n/a"), with the same real
  endpoints in a consultation of their own: ``--end-calls`` fresh calls (the provider calls again
  each time) ended by the provider and as many ended by the patient, each after ``--warmup``
  seconds of video both ways; from the hanging-up side's ``ConsultationCall.hangup()`` until the
  other side's call has ended (its ``CallStateChanged`` "ended") and until both media children in
  the call have exited (the warm spare each side keeps for its next call stays), p50 and max per
  direction. ``--only end-call`` measures this alone (about 30 s).

    .venv/bin/python scripts/bench_call.py [--seconds 10] [--setups 3] [--freeze 10] [--drop 10] [--cap 40]
        [--end-calls 3] [--only end-call]

``--browser`` measures the call with a real browser on the provider's end instead (headless Chromium
running tests/js/call-page/ against the kiosk agent and, in the same run, against bare aiortc: offer
to answer, offer to first frame both ways, recovery after a freeze, a UDP drop and a restart, end-call
from both sides); ``--load`` runs one busy process per core beside it. See scripts/bench_call_browser.py.

    .venv/bin/python scripts/bench_call.py --browser [--load] [--end-calls 5] [--warmup 2] [--cap 20]
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import json
import logging
import math
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from bench_call_tap import frame_tap

from telehealth_client import events, logs
from telehealth_client.connector import Connector
from telehealth_client.consultation.patient import PatientEndpoint
from telehealth_client.consultation.provider import ProviderEndpoint
from telehealth_client.media.child_messages import ChildEvent, FirstFrame
from telehealth_client.media.common import TurnConfig
from telehealth_client.media.consultation_call import ConsultationCall, MediaOptions
from telehealth_client.media.worker import Devices, MediaWorker
from telehealth_client.protocol import channels
from telehealth_client.protocol.messages import ConsultationState
from telehealth_client.pubsub.pubnub_bus import BusConfig
from telehealth_client.security.clinic_client import ClinicClient
from telehealth_devstack.demo.witness import Sighting, Witness
from telehealth_devstack.stack import DevStack
from telehealth_devstack.turn import TurnServer, turn_rest_credentials

SCRIPTS = Path(__file__).resolve().parent
TAP_PATH = SCRIPTS / "bench_call_tap"
RAW_PEER = SCRIPTS / "bench_call_peer.py"
WAIT_SECONDS = 30.0
VIDEO_FRAMES = 600  # 20 s at 30 fps: longer than any outage, so a stale frame is never taken for a new one
VIDEO_FPS = 30.0
LIVE_SECONDS = 0.5  # a shown frame sent longer ago than this is stale (steady-state p95: ~50 ms)
SIDES = ("caller", "callee")
PROVIDER = "dr-bench"
PATIENT = "pat-bench"
KIOSK = "kiosk-bench"
END_SUFFIX = "-end"  # the end-call rounds' IDs
DEPARTMENT = "er"


def stats(samples: list[float]) -> dict[str, float | int] | None:
    if not samples:
        return None
    ordered = sorted(samples)
    return {
        "p50": round(statistics.median(ordered), 1),
        "p95": round(ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)], 1),  # nearest rank
        "min": round(ordered[0], 1),
        "max": round(ordered[-1], 1),
        "n": len(ordered),
    }


def other(side: str) -> str:
    return "callee" if side == "caller" else "caller"


def tap_env(directory: Path, side: str) -> dict[str, str]:
    """The environment of a measured process: frame_tap loaded (sitecustomize), its log's place."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(TAP_PATH), env.get("PYTHONPATH", "")) if p)
    env["BENCH_CALL_TAP_DIR"] = str(directory)
    env["BENCH_CALL_TAP_SIDE"] = side
    return env


def write_video(path: Path, width: int, height: int) -> Path:
    import cv2

    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"FFV1"), VIDEO_FPS, (width, height))
    if not writer.isOpened():
        raise RuntimeError(f"OpenCV cannot write FFV1 video to {path}")
    try:
        for number in range(VIDEO_FRAMES):
            writer.write(frame_tap.draw(number, width, height))
    finally:
        writer.release()
    return path


# -- the processes measured ------------------------------------------------------------------------


class Peer(Protocol):
    pid: int
    first_frame: asyncio.Event

    async def offer(self) -> str: ...
    async def answer(self, sdp: str) -> str: ...
    async def accept_answer(self, sdp: str) -> None: ...
    async def aclose(self) -> None: ...


class AgentPeer:
    """The agent's media child, as the agent drives it."""

    def __init__(self) -> None:
        self.first_frame = asyncio.Event()
        self.worker: MediaWorker | None = None
        self.pid = 0

    @classmethod
    async def spawn(cls, turn: TurnConfig, video: Path, env: dict[str, str]) -> AgentPeer:
        peer = cls()
        peer.worker = await MediaWorker.spawn(on_event=peer._on_event, env=env)
        peer.pid = peer.worker.pid
        await peer.worker.start(turn, Devices(camera=str(video), camera_is_file=True))
        return peer

    def _on_event(self, event: ChildEvent) -> None:
        if isinstance(event, FirstFrame) and event.kind == "video":
            self.first_frame.set()

    @property
    def _worker(self) -> MediaWorker:
        assert self.worker is not None
        return self.worker

    async def offer(self) -> str:
        return await self._worker.offer()

    async def answer(self, sdp: str) -> str:
        return await self._worker.answer(sdp)

    async def accept_answer(self, sdp: str) -> None:
        await self._worker.accept_answer(sdp)

    async def aclose(self) -> None:
        if self.worker is not None:
            await self.worker.aclose()


class RawPeer:
    """scripts/bench_call_peer.py: a bare RTCPeerConnection in its own process."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.pid = process.pid
        self.first_frame = asyncio.Event()
        self.resumed = asyncio.Event()
        self._ready = asyncio.Event()
        self._waiting: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._ids = 0
        self._reader = asyncio.ensure_future(self._read())

    @classmethod
    async def spawn(cls, turn: TurnConfig, video: Path, env: dict[str, str]) -> RawPeer:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            str(RAW_PEER),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            env=env,
            limit=1 << 20,
        )
        peer = cls(process)
        try:
            await asyncio.wait_for(peer._ready.wait(), WAIT_SECONDS)
            credentials = {"urls": list(turn.urls), "username": turn.username, "credential": turn.credential}
            await peer._request("start", turn=credentials, camera=str(video))
        except BaseException:
            await peer.aclose()
            raise
        return peer

    async def _read(self) -> None:
        assert self.process.stdout is not None
        while line := await self.process.stdout.readline():
            message = json.loads(line)
            if "id" in message:
                future = self._waiting.pop(message["id"], None)
                if future is not None and not future.done():
                    future.set_result(message)
            elif message.get("event") == "ready":
                self._ready.set()
            elif message.get("event") == "first-frame":
                self.first_frame.set()
            elif message.get("event") == "resumed":
                self.resumed.set()
        for future in self._waiting.values():
            if not future.done():
                future.set_exception(RuntimeError("the raw peer exited"))

    async def _request(self, op: str, **fields: Any) -> dict[str, Any]:
        assert self.process.stdin is not None
        self._ids += 1
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting[self._ids] = future
        self.process.stdin.write((json.dumps({"id": self._ids, "op": op, **fields}) + "\n").encode())
        await self.process.stdin.drain()
        answer = await asyncio.wait_for(future, WAIT_SECONDS)
        if not answer.get("ok"):
            raise RuntimeError(f"the raw peer refused {op}: {answer.get('reason')}")
        return answer

    async def offer(self) -> str:
        return str((await self._request("offer"))["sdp"])

    async def answer(self, sdp: str) -> str:
        return str((await self._request("answer", sdp=sdp))["sdp"])

    async def accept_answer(self, sdp: str) -> None:
        await self._request("accept-answer", sdp=sdp)

    async def add_candidate(self, candidate: dict[str, Any]) -> None:
        """A browser's trickled candidate (its ``RTCIceCandidate.toJSON()``)."""
        fields = {name: candidate.get(name) for name in ("candidate", "sdpMid", "sdpMLineIndex")}
        await self._request("add-candidate", **fields)

    async def aclose(self) -> None:
        if self.process.returncode is None:
            with contextlib.suppress(RuntimeError, TimeoutError, ConnectionError):
                await self._request("close")
            try:
                await asyncio.wait_for(self.process.wait(), 10.0)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()
        await asyncio.gather(self._reader, return_exceptions=True)


Spawner = Callable[[TurnConfig, Path, dict[str, str]], Awaitable[Peer]]
SPAWNERS: dict[str, Spawner] = {"agent": AgentPeer.spawn, "raw": RawPeer.spawn}


class Turn:
    """The one coturn everything goes through (the development stack's)."""

    def __init__(self, server: TurnServer) -> None:
        self.server = server

    def config(self, user_id: str) -> TurnConfig:
        username, credential = turn_rest_credentials(self.server.secret, user_id, 600)
        return TurnConfig(tuple(self.server.urls), username, credential)

    async def freeze(self, seconds: float) -> float:
        """SIGSTOP for ``seconds`` (the outage itself, not a wait for something); the SIGCONT time."""
        pid = self.server.pid
        assert pid is not None
        os.kill(pid, signal.SIGSTOP)
        try:
            await asyncio.sleep(seconds)
        finally:
            os.kill(pid, signal.SIGCONT)
        return time.monotonic()

    async def restart(self) -> float:
        """Killed and started again on the same port and secret (credentials stay valid, allocations
        are gone); when it answers again."""
        await self.server.restart()
        return time.monotonic()

    async def drop_udp(self, seconds: float) -> float:
        """Every datagram from a relay port to a relay port of this coturn dropped on ``lo`` for
        ``seconds`` (the media path between the two peers, nothing else on the machine); the time
        the rule was removed."""
        low, high = self.server.relay_ports
        rule = [
            "INPUT", "-i", "lo", "-p", "udp",
            "--sport", f"{low}:{high}", "--dport", f"{low}:{high}", "-j", "DROP",
        ]  # fmt: skip
        await iptables("-A", rule)
        try:
            await asyncio.sleep(seconds)  # the outage itself, not a wait for something
        finally:
            await iptables("-D", rule)
        return time.monotonic()


def iptables_unusable() -> str | None:
    """Why the UDP drop cannot be measured here, or None."""
    if shutil.which("iptables") is None:
        return "iptables is not installed (scripts/install-system-deps.sh --test installs it)"
    if os.geteuid() != 0:
        return "iptables needs root"
    return None


async def iptables(action: str, rule: list[str]) -> None:
    process = await asyncio.create_subprocess_exec(
        "iptables", action, *rule, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
    )
    _, error = await process.communicate()
    if process.returncode != 0:
        raise RuntimeError(
            f"iptables {action} {' '.join(rule)} failed (exit code {process.returncode}): "
            f"{error.decode(errors='replace').strip()}"
        )


# -- reading the frame logs --------------------------------------------------------------------------


@dataclass
class Shown:
    at: float
    sent_at: float | None  # None: unreadable, or no such frame was sent
    corrupt: bool


@dataclass
class SideFrames:
    sent: list[tuple[int, float]] = field(default_factory=list)
    received: list[tuple[int, float]] = field(default_factory=list)
    # The same frames, each process's apart: "gone backwards" is judged within one process (during
    # a rebuild two media children of one side both show the other side's video, each in order).
    received_by_process: list[list[tuple[int, float]]] = field(default_factory=list)


def load_frames(directory: Path) -> dict[str, SideFrames]:
    frames = {side: SideFrames() for side in SIDES}
    for path in directory.glob("*.tap"):
        side = path.name.split("-", 1)[0]
        sent, received = frame_tap.load(path)
        frames[side].sent.extend(sent)
        frames[side].received.extend(received)
        frames[side].received_by_process.append(sorted(received, key=lambda item: item[1]))
    missing = [side for side, side_frames in frames.items() if not side_frames.sent]
    if missing:
        # The children log through scripts/bench_call_tap/sitecustomize.py: it did not load.
        raise RuntimeError(f"no frame log from the {' and '.join(missing)} in {directory}")
    for side_frames in frames.values():
        side_frames.sent.sort(key=lambda item: item[1])
        side_frames.received.sort(key=lambda item: item[1])
    return frames


def shown(received: list[tuple[int, float]], sent: list[tuple[int, float]]) -> list[Shown]:
    """Each shown frame matched to the latest sending of its number before it was shown; corrupt if
    unreadable, unmatched, or sent before a frame already shown (gone backwards)."""
    times: dict[int, list[float]] = {}
    for number, at in sent:
        times.setdefault(number, []).append(at)
    result: list[Shown] = []
    newest = float("-inf")
    for number, at in received:
        candidates = times.get(number, []) if number != frame_tap.UNREADABLE else []
        index = bisect.bisect_right(candidates, at) - 1
        sent_at = candidates[index] if index >= 0 else None
        corrupt = sent_at is None or sent_at < newest
        if sent_at is not None:
            newest = max(newest, sent_at)
        result.append(Shown(at, sent_at, corrupt))
    return result


def side_shown(frames: dict[str, SideFrames]) -> dict[str, list[Shown]]:
    """Each side's shown frames in time order, each process's judged on its own."""
    found: dict[str, list[Shown]] = {}
    for side in SIDES:
        streams = frames[side].received_by_process or [frames[side].received]
        items = [item for stream in streams for item in shown(stream, frames[other(side)].sent)]
        found[side] = sorted(items, key=lambda item: item.at)
    return found


def is_live(item: Shown) -> bool:
    """Clean and sent moments ago: not the backlog a frozen TURN server releases when it resumes."""
    return not item.corrupt and item.sent_at is not None and item.at - item.sent_at < LIVE_SECONDS


def first_after(items: list[Shown], moment: float, accept: Callable[[Shown], bool]) -> float | None:
    for item in items:
        if item.at >= moment and accept(item):
            return item.at - moment
    return None


# -- the processes' own counters ---------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


# -- the measurements --------------------------------------------------------------------------------


@dataclass
class Pair:
    caller: Peer
    callee: Peer
    offered_at: float

    @property
    def peers(self) -> dict[str, Peer]:
        return {"caller": self.caller, "callee": self.callee}

    async def aclose(self) -> None:
        await asyncio.gather(self.caller.aclose(), self.callee.aclose())


async def connect(kind: str, turn: Turn, video: Path, taps: Path) -> Pair:
    await asyncio.to_thread(taps.mkdir, parents=True, exist_ok=True)
    spawn = SPAWNERS[kind]
    caller, callee = await asyncio.gather(
        spawn(turn.config("bench-caller"), video, tap_env(taps, "caller")),
        spawn(turn.config("bench-callee"), video, tap_env(taps, "callee")),
    )
    pair = Pair(caller, callee, time.monotonic())
    try:
        offer = await caller.offer()
        await caller.accept_answer(await callee.answer(offer))
        await asyncio.wait_for(
            asyncio.gather(caller.first_frame.wait(), callee.first_frame.wait()), WAIT_SECONDS
        )
    except BaseException:
        await pair.aclose()
        raise
    return pair


def setup_ms(frames: dict[str, SideFrames], offered_at: float) -> dict[str, float | None]:
    firsts = {side: next((at for _, at in frames[side].received if at >= offered_at), None) for side in SIDES}
    result = {side: None if at is None else round((at - offered_at) * 1000, 1) for side, at in firsts.items()}
    known = [value for value in result.values() if value is not None]
    result["both"] = max(known) if len(known) == len(SIDES) else None
    return result


async def setup_round(kind: str, turn: Turn, video: Path, taps: Path) -> float | None:
    pair = await connect(kind, turn, video, taps)
    await pair.aclose()
    return setup_ms(await asyncio.to_thread(load_frames, taps), pair.offered_at)["both"]


async def steady(
    kind: str, turn: Turn, video: Path, taps: Path, seconds: float, warmup: float
) -> dict[str, Any]:
    pair = await connect(kind, turn, video, taps)
    try:
        await asyncio.sleep(warmup)  # the measurement window starts after the encoders settle
        pids = {side: peer.pid for side, peer in pair.peers.items()}
        cpu_before = {side: await asyncio.to_thread(cpu_seconds, pid) for side, pid in pids.items()}
        window_start = time.monotonic()
        await asyncio.sleep(seconds)  # the window measured
        window_end = time.monotonic()
        cpu_after = {side: await asyncio.to_thread(cpu_seconds, pid) for side, pid in pids.items()}
        rss = {side: await asyncio.to_thread(peak_rss_mib, pid) for side, pid in pids.items()}
    finally:
        await pair.aclose()
    frames = await asyncio.to_thread(load_frames, taps)
    elapsed = window_end - window_start
    result: dict[str, Any] = {
        "offer_to_first_frame_ms": setup_ms(frames, pair.offered_at),
        "fps": {},
        "latency_ms": {},
        "corrupt_frames_shown": 0,
        "cpu_percent": {
            side: round((cpu_after[side] - cpu_before[side]) / elapsed * 100, 1) for side in SIDES
        },
        "peak_rss_mib": rss,
    }
    for side, items in side_shown(frames).items():
        window = [item for item in items if window_start <= item.at < window_end]
        result["fps"][side] = round(len(window) / elapsed, 1)
        result["latency_ms"][side] = stats(
            [
                (item.at - item.sent_at) * 1000
                for item in window
                if item.sent_at is not None and not item.corrupt
            ]
        )
        result["corrupt_frames_shown"] += sum(item.corrupt for item in window)
    return result


def outage(
    frames: dict[str, SideFrames], started: float, back: float, settle: float, limit: float = math.inf
) -> dict[str, Any]:
    """After an outage from ``started`` that ended at ``back``, per side (seconds from ``back``): the
    next frame shown, the next clean one, the next live one (clean and fresh); and from ``started``
    until ``settle`` s after the first live frame, the corrupt and the stale frames shown. Nothing
    shown from ``limit`` on (the next outage's start) is this outage's: none is counted twice."""
    result: dict[str, Any] = {
        "watched_until_s": None if math.isinf(limit) else round(limit - back, 3),
        "media_back_s": {},
        "clean_back_s": {},
        "live_back_s": {},
        "corrupt_frames_shown": {},
        "stale_frames_shown": {},
    }
    for side, all_items in side_shown(frames).items():
        items = [item for item in all_items if item.at < limit]
        media = first_after(items, back, lambda item: True)
        clean = first_after(items, back, lambda item: not item.corrupt)
        live = first_after(items, back, is_live)
        until = back + (live if live is not None else 0.0) + settle
        watched = [item for item in items if started <= item.at < until]
        result["media_back_s"][side] = None if media is None else round(media, 3)
        result["clean_back_s"][side] = None if clean is None else round(clean, 3)
        result["live_back_s"][side] = None if live is None else round(live, 3)
        result["corrupt_frames_shown"][side] = sum(item.corrupt for item in watched)
        result["stale_frames_shown"][side] = sum(not item.corrupt and not is_live(item) for item in watched)
    lives = list(result["live_back_s"].values())
    result["both_live_back_s"] = None if None in lives else max(lives)
    return result


async def wait_all(waits: Iterable[Awaitable[Any]], cap: float) -> None:
    """Each wait, within ``cap`` seconds in all; a wait that does not end is left to the analysis."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.gather(*waits), cap)


@dataclass
class Settings:
    seconds: float
    warmup: float
    setups: int
    freeze: float
    drop: float
    cap: float
    settle: float
    resolutions: list[tuple[int, int]]
    recovery: bool
    udp_drop_unusable: str | None = None
    end_calls: int = 3  # fresh calls ended per direction
    only_end_call: bool = False  # no setups, no steady measurements, no outages


async def raw_recovery(turn: Turn, video: Path, taps: Path, settings: Settings) -> dict[str, Any]:
    """Raw aiortc through a freeze, a UDP drop and then a restart (last: it never comes back from
    that one): nothing rebuilds, so it resumes or it does not."""
    pair = await connect("raw", turn, video, taps)
    peers = [peer for peer in (pair.caller, pair.callee) if isinstance(peer, RawPeer)]
    moments: dict[str, tuple[float, float]] = {}

    async def through(name: str, cause: Callable[[], Awaitable[float]]) -> None:
        for peer in peers:
            peer.resumed.clear()
        started = time.monotonic()
        back = await cause()
        moments[name] = started, back
        await wait_all((peer.resumed.wait() for peer in peers), settings.cap)
        await asyncio.sleep(settings.settle)  # the frames shown after media came back are counted

    try:
        await asyncio.sleep(settings.warmup)
        await through("freeze", lambda: turn.freeze(settings.freeze))
        if settings.udp_drop_unusable is None:
            await through("udp_drop", lambda: turn.drop_udp(settings.drop))
        await through("restart", turn.restart)
    finally:
        await pair.aclose()
    frames = await asyncio.to_thread(load_frames, taps)
    results = {
        name: outage(frames, *moment, settings.settle, limit) for name, moment, limit in bounded(moments)
    }
    return with_skipped(results, settings)


def bounded(moments: dict[str, tuple[float, float]]) -> list[tuple[str, tuple[float, float], float]]:
    """Each outage (in the order made) with the start of the next one, where its watch ends."""
    ordered = list(moments.items())
    limits = [started for _, (started, _) in ordered[1:]] + [math.inf]
    return [(name, moment, limit) for (name, moment), limit in zip(ordered, limits, strict=True)]


def with_skipped(results: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """The outages in the order they were made, the UDP drop's reason if it could not be."""
    if settings.udp_drop_unusable is not None:
        results["udp_drop"] = {"skipped": settings.udp_drop_unusable}
    order = ("freeze", "udp_drop", "restart", "child_kill")
    return {name: results[name] for name in order if name in results}


class Agents:
    """A provider calling a patient kiosk over the development stack, each with its media children."""

    def __init__(self, stack: DevStack, state_dir: Path, video: Path, taps: Path, suffix: str = "") -> None:
        self.stack = stack
        self.state_dir = state_dir
        self.video = video
        self.taps = taps
        # A consultation of their own in a stack (another patient at another kiosk).
        self.patient_id = PATIENT + suffix
        self.kiosk_id = KIOSK + suffix
        self.appointment_id = "appt-bench" + suffix
        self.closers: list[Callable[[], Awaitable[None]]] = []
        self.witnesses: dict[str, Witness] = {}
        self.consultation = channels.consultation(PROVIDER, self.patient_id)
        self.provider: ProviderEndpoint | None = None
        self.patient: PatientEndpoint | None = None
        self.calls: dict[str, ConsultationCall] = {}  # each side's, once the provider has called

    def _template(self, user_id: str) -> BusConfig:
        return self.stack.bus_config(user_id, request_timeout_seconds=5.0)

    def _clinic(self, credential: str) -> ClinicClient:
        assert self.stack.clinic is not None
        client = ClinicClient(self.stack.clinic.url, credential)
        self.closers.append(client.aclose)
        return client

    def _hub(self, name: str) -> events.EventHub:
        hub = events.EventHub()
        witness = self.witnesses[name] = Witness(name, hub)

        async def close() -> None:
            await witness.aclose()
            hub.close()

        self.closers.append(close)
        return hub

    def _media(self, side: str) -> MediaOptions:
        self.taps.mkdir(parents=True, exist_ok=True)
        return MediaOptions(Devices(camera=str(self.video), camera_is_file=True), tap_env(self.taps, side))

    async def _seen(self, name: str, matches: Callable[[Any], bool], after: int = 0) -> None:
        await asyncio.wait_for(self.witnesses[name].seen(matches, after=after), WAIT_SECONDS)

    async def start_call(self) -> None:
        kiosk_clinic = self._clinic(self.stack.kiosk_credential(self.kiosk_id))
        provider = ProviderEndpoint(
            Connector(self._template(PROVIDER), self._clinic(self.stack.users[PROVIDER].credential)),
            self._hub("caller"),
            user_id=PROVIDER,
            department_id=DEPARTMENT,
            state_dir=self.state_dir / PROVIDER,
            media=self._media("caller"),
        )
        self.closers.append(provider.aclose)
        self.provider = provider
        await provider.start()
        patient = PatientEndpoint(
            Connector(self._template(self.kiosk_id), kiosk_clinic),
            self._hub("callee"),
            state_dir=self.state_dir / self.kiosk_id,
            kiosk_id=self.kiosk_id,
            media=self._media("callee"),
        )
        self.closers.append(patient.aclose)
        self.patient = patient
        await kiosk_clinic.record_consent(self.patient_id, True, None)
        await patient.check_in(
            appointment_id=self.appointment_id,
            patient_id=self.patient_id,
            provider_id=PROVIDER,
            department_id=DEPARTMENT,
        )
        await self._seen("caller", state_is(ConsultationState.CHECKED_IN))
        await provider.join(self.consultation)
        await self._seen("callee", state_is(ConsultationState.CONNECTING))
        await self.place_call()

    async def place_call(self) -> None:
        """The provider calls (again, once a call has ended), until both sides report video flowing."""
        assert self.provider is not None and self.patient is not None
        marks = self.marks()
        caller = await self.provider.call(self.consultation)
        callee = self.patient.call
        if callee is None:
            raise RuntimeError("the kiosk has no call to answer with")
        self.calls = {"caller": caller, "callee": callee}
        await asyncio.gather(*(self._seen(side, video_flowing, marks[side]) for side in SIDES))

    async def sighting(
        self, name: str, matches: Callable[[Any], bool], after: int, cap: float
    ) -> Sighting | None:
        """The first matching event ``name`` saw from ``after`` on, within ``cap`` seconds (or None)."""
        try:
            return await asyncio.wait_for(self.witnesses[name].seen(matches, after=after), cap)
        except TimeoutError:
            return None

    def marks(self) -> dict[str, int]:
        return {side: self.witnesses[side].mark() for side in SIDES}

    def timeline(self, marks: dict[str, int], until: dict[str, int], back: float) -> list[str]:
        """The call's events from ``marks`` to ``until``, seconds from ``back`` (where recovery time goes)."""
        lines: list[tuple[float, str]] = []
        for side in SIDES:
            for sighting in self.witnesses[side].sightings(after=marks[side])[: until[side] - marks[side]]:
                event = sighting.event
                if isinstance(event, events.CallStateChanged):
                    what = f"call {event.phase}" + (f" ({event.reason})" if event.reason else "")
                elif isinstance(event, events.MediaFlowing):
                    what = f"{event.media} flowing"
                elif isinstance(event, events.MediaFailed):
                    what = f"media failed: {event.source}, {event.reason}"
                else:
                    continue
                # Witness times are perf_counter: CLOCK_MONOTONIC on Linux, as time.monotonic().
                lines.append((sighting.at - back, f"{sighting.at - back:+.3f} s {side}: {what}"))
        return [text for _, text in sorted(lines)]

    def kill_kiosk_child(self) -> float:
        """SIGKILL to the kiosk's media child (as a codec crash would end it); the time of the kill."""
        call = None if self.patient is None else self.patient.call
        worker = None if call is None else call.worker
        if worker is None:
            raise RuntimeError("the kiosk has no media child to kill")
        os.kill(worker.pid, signal.SIGKILL)
        return time.monotonic()

    async def video_again(self, marks: dict[str, int], cap: float) -> None:
        """Until both sides report video flowing again (a rebuilt call's first frame)."""
        await wait_all((self._seen(side, video_flowing, marks[side]) for side in SIDES), cap)

    async def aclose(self) -> None:
        for closer in reversed(self.closers):
            with contextlib.suppress(Exception):
                await closer()


def state_is(state: ConsultationState) -> Callable[[Any], bool]:
    return lambda e: isinstance(e, events.StateChanged) and e.state is state


def video_flowing(event: Any) -> bool:
    return isinstance(event, events.MediaFlowing) and event.media == "video"


async def agent_recovery(
    stack: DevStack, turn: Turn, video: Path, taps: Path, state_dir: Path, settings: Settings
) -> dict[str, Any]:
    agents = Agents(stack, state_dir, video, taps)
    moments: dict[str, tuple[float, float]] = {}
    timelines: dict[str, list[str]] = {}

    async def through(name: str, cause: Callable[[], Awaitable[float]]) -> None:
        marks = agents.marks()
        started = time.monotonic()
        back = await cause()
        moments[name] = started, back
        await agents.video_again(marks, settings.cap)
        await asyncio.sleep(settings.settle)  # the frames shown after media came back are counted
        timelines[name] = agents.timeline(marks, agents.marks(), back)

    async def kill() -> float:
        return agents.kill_kiosk_child()  # the outage starts and "ends" at the kill

    try:
        await agents.start_call()
        await asyncio.sleep(settings.warmup)
        await through("freeze", lambda: turn.freeze(settings.freeze))
        if settings.udp_drop_unusable is None:
            await through("udp_drop", lambda: turn.drop_udp(settings.drop))
        await through("restart", turn.restart)
        await through("child_kill", kill)
    finally:
        await agents.aclose()
    frames = await asyncio.to_thread(load_frames, taps)
    results = {
        name: outage(frames, *moment, settings.settle, limit) | {"events": timelines[name]}
        for name, moment, limit in bounded(moments)
    }
    return with_skipped(results, settings)


HANGING_UP = {"caller": "provider_hangs_up", "callee": "patient_hangs_up"}
RAW_END_CALL = "n/a: raw aiortc has no end-call signaling (each side can only close its own connection)"


def call_ended(event: Any) -> bool:
    return isinstance(event, events.CallStateChanged) and event.phase == "ended"


def milliseconds(moment: float | None, since: float) -> float | None:
    return None if moment is None else round((moment - since) * 1000, 1)


async def exited_at(worker: MediaWorker) -> float:
    """When the media child has exited (the agent saw its process end)."""
    await asyncio.shield(worker.exited)
    return time.monotonic()


async def end_one_call(agents: Agents, side: str, cap: float) -> dict[str, Any]:
    """``side`` ends a call under way with its ConsultationCall.hangup(): from that call until the
    other side's call has ended (its CallStateChanged "ended"), until both media children in the
    call have exited, and until both (``ended_on_both_ms``). The warm spare each side keeps for its
    next call is not in the call and stays."""
    far = other(side)
    workers = {name: call.worker for name, call in agents.calls.items()}
    exits: dict[str, asyncio.Task[float]] = {}
    for name, worker in workers.items():
        if worker is None:
            raise RuntimeError(f"the {name} has no media child in the call")
        exits[name] = asyncio.ensure_future(exited_at(worker))  # watched before the hangup: no delay
    marks = agents.marks()
    try:
        started = time.monotonic()
        await agents.calls[side].hangup()
        returned = time.monotonic()
        ended = await agents.sighting(far, call_ended, marks[far], cap)
        await wait_all(exits.values(), cap)
    finally:
        for task in exits.values():
            task.cancel()
        await asyncio.gather(*exits.values(), return_exceptions=True)
    # Witness times are perf_counter: CLOCK_MONOTONIC on Linux, as time.monotonic().
    far_ended = None if ended is None else ended.at
    exit_times = [task.result() for task in exits.values() if not task.cancelled()]
    children = max(exit_times) if len(exit_times) == len(exits) else None
    both = None if far_ended is None or children is None else max(far_ended, children)
    return {
        "hangup_returned_ms": milliseconds(returned, started),
        "other_side_ended_ms": milliseconds(far_ended, started),
        "children_exited_ms": milliseconds(children, started),
        "ended_on_both_ms": milliseconds(both, started),
        "other_side_reason": None if ended is None else getattr(ended.event, "reason", None),
    }


async def agent_end_calls(
    stack: DevStack, video: Path, taps: Path, state_dir: Path, settings: Settings
) -> dict[str, Any]:
    """Each side in turn ends ``settings.end_calls`` fresh calls (the provider calls again each time,
    in one consultation of its own), each after ``--warmup`` seconds of media both ways."""
    agents = Agents(stack, state_dir, video, taps, suffix=END_SUFFIX)
    samples: dict[str, list[dict[str, Any]]] = {name: [] for name in HANGING_UP.values()}
    try:
        await agents.start_call()
        first = True
        for side, name in HANGING_UP.items():
            for _ in range(settings.end_calls):
                if not first:
                    await agents.place_call()
                first = False
                await asyncio.sleep(settings.warmup)  # a call under way, not a wait for something
                samples[name].append(await end_one_call(agents, side, settings.cap))
    finally:
        await agents.aclose()
    results: dict[str, Any] = {}
    for name, outcomes in samples.items():
        summary: dict[str, Any] = {}
        for key in ("ended_on_both_ms", "other_side_ended_ms", "children_exited_ms", "hangup_returned_ms"):
            summary[key] = stats([outcome[key] for outcome in outcomes if outcome[key] is not None])
        # Not within --cap: the other side's call never ended, or a media child was still running.
        summary["not_ended"] = sum(outcome["ended_on_both_ms"] is None for outcome in outcomes)
        summary["other_side_reasons"] = sorted({str(outcome["other_side_reason"]) for outcome in outcomes})
        summary["samples"] = outcomes
        results[name] = summary
    return results


def label(size: tuple[int, int]) -> str:
    return f"{size[0]}x{size[1]}"


async def against_raw(
    stack: DevStack,
    settings: Settings,
    videos: dict[tuple[int, int], Path],
    taps_for: Callable[[str], Path],
    state_dir: Path,
) -> dict[str, Any]:
    """Setups, steady measurements and outages, the agent and raw aiortc alternated."""
    samples: dict[str, list[float]] = {"agent": [], "raw": []}
    first = settings.resolutions[0]
    results: dict[str, Any] = {}
    turn = Turn(stack.turn)
    for _ in range(settings.setups):
        for kind in ("raw", "agent"):  # alternated: both see the same machine load
            setup = await setup_round(kind, turn, videos[first], taps_for(f"setup-{kind}"))
            if setup is not None:
                samples[kind].append(setup)
    results["steady"] = {}
    for size in settings.resolutions:
        at_size: dict[str, Any] = {}
        results["steady"][label(size)] = at_size
        for kind in ("raw", "agent"):
            taps = taps_for(f"steady-{kind}-{label(size)}")
            at_size[kind] = await steady(kind, turn, videos[size], taps, settings.seconds, settings.warmup)
            both = at_size[kind]["offer_to_first_frame_ms"]["both"]
            if both is not None and size == first:
                samples[kind].append(both)
    results["offer_to_first_frame_ms"] = {kind: stats(values) for kind, values in samples.items()}
    if settings.recovery:
        results["recovery"] = {
            "raw": await raw_recovery(turn, videos[first], taps_for("recovery-raw"), settings),
            "agent": await agent_recovery(
                stack, turn, videos[first], taps_for("recovery-agent"), state_dir, settings
            ),
        }
    return results


async def bench(settings: Settings, directory: Path, taps_root: Path) -> dict[str, Any]:
    first = settings.resolutions[0]
    videos = {
        size: await asyncio.to_thread(write_video, directory / f"numbered-{label(size)}.mkv", *size)
        for size in ([first] if settings.only_end_call else settings.resolutions)
    }
    results: dict[str, Any] = {
        "machine": {"cores": os.cpu_count(), "load_average_at_start": [round(x, 2) for x in os.getloadavg()]},
        "settings": {
            "seconds": settings.seconds,
            "warmup": settings.warmup,
            "setups": settings.setups,
            "freeze": settings.freeze,
            "drop": settings.drop,
            "cap": settings.cap,
            "settle": settings.settle,
            "end_calls": settings.end_calls,
        },
        "agent_recovery_measured_with": "the real endpoints (provider calls, patient kiosk answers) over "
        "the development stack: relay, clinic stand-in, coturn",
    }
    round_number = 0

    def taps_for(name: str) -> Path:
        nonlocal round_number
        round_number += 1
        return taps_root / f"{round_number:02d}-{name}"

    # Each round's kiosk has its own device credential (Agents' suffixes).
    async with DevStack(providers=(PROVIDER,), kiosks=(KIOSK, KIOSK + END_SUFFIX)) as stack:
        if not settings.only_end_call:
            results |= await against_raw(stack, settings, videos, taps_for, directory / "agents")
        if settings.end_calls:
            results["end_call"] = {
                "raw": RAW_END_CALL,
                "agent": await agent_end_calls(
                    stack, videos[first], taps_for("end-call-agent"), directory / "agents-end", settings
                ),
            }
    results["targets"] = targets(results, label(first))
    return results


def target(description: str, measured: Any, met: bool | None) -> dict[str, Any]:
    return {"target": description, "measured": measured, "met": met}


def ratio(agent: float | None, raw: float | None) -> float | None:
    return None if agent is None or raw is None or raw == 0 else round(agent / raw, 3)


def targets(results: dict[str, Any], size: str) -> dict[str, Any]:
    found: dict[str, Any] = {}
    setups = results.get("offer_to_first_frame_ms")
    if setups is not None:
        p50 = None if setups["agent"] is None else setups["agent"]["p50"]
        found["offer_to_first_frame"] = target(
            "agent p50 under 500 ms (aim 300), both sides showing remote video",
            {"agent_p50_ms": p50, "raw_p50_ms": (setups["raw"] or {}).get("p50")},
            None if p50 is None else p50 < 500,
        )
    steady = results.get("steady", {}).get(size)
    if steady is not None:
        agent, raw = steady["agent"], steady["raw"]
        fps = min(agent["fps"].values())
        found[f"fps_{size}"] = target("agent shows 30 fps on both sides (at least 29)", fps, fps >= 29.0)

        def mean_latency(kind: dict[str, Any]) -> float | None:
            values = [side["p50"] for side in kind["latency_ms"].values() if side is not None]
            return round(statistics.fmean(values), 1) if len(values) == len(SIDES) else None

        latency = ratio(mean_latency(agent), mean_latency(raw))
        found[f"latency_p50_{size}"] = target(
            "agent within 10 % of raw aiortc (agent/raw, mean of the sides' p50)",
            {"agent_ms": mean_latency(agent), "raw_ms": mean_latency(raw), "ratio": latency},
            None if latency is None else latency <= 1.10,
        )
        cpu = ratio(
            statistics.fmean(agent["cpu_percent"].values()), statistics.fmean(raw["cpu_percent"].values())
        )
        found[f"cpu_{size}"] = target(
            "agent within 10 % of raw aiortc (agent/raw, mean % of a core per side)",
            {"agent": agent["cpu_percent"], "raw": raw["cpu_percent"], "ratio": cpu},
            None if cpu is None else cpu <= 1.10,
        )
    recovery = results.get("recovery")
    if recovery is not None:
        agent, raw = recovery["agent"], recovery["raw"]
        freeze, drop = results["settings"]["freeze"], results["settings"]["drop"]

        def back(kind: dict[str, Any], name: str) -> float | None:
            value = kind.get(name, {}).get("both_live_back_s")
            return None if value is None else float(value)

        freeze_back = back(agent, "freeze")
        found["back_after_freeze"] = target(
            "agent: live video (clean, sent under 0.5 s before) on both sides within 2 s after a "
            f"{freeze:g} s TURN freeze ends",
            {"agent_s": freeze_back, "raw_s": back(raw, "freeze")},
            freeze_back is not None and freeze_back <= 2.0,
        )
        if "skipped" in agent["udp_drop"]:
            found["back_after_udp_drop"] = target(
                f"agent: live video on both sides within 2 s after UDP on lo is dropped for {drop:g} s",
                agent["udp_drop"],
                None,
            )
        else:
            drop_back = back(agent, "udp_drop")
            found["back_after_udp_drop"] = target(
                f"agent: live video on both sides within 2 s after a {drop:g} s drop of UDP between "
                "coturn's relay ports on lo ends (the rule removed), like the freeze",
                {"agent_s": drop_back, "raw_s": back(raw, "udp_drop")},
                drop_back is not None and drop_back <= 2.0,
            )
        restart_back = back(agent, "restart")
        found["back_after_turn_restart"] = target(
            "agent: live video on both sides within 3 s after TURN restarts (raw aiortc: never)",
            {"agent_s": restart_back, "raw_s": back(raw, "restart")},
            restart_back is not None and restart_back <= 3.0,
        )
        kill_back = back(agent, "child_kill")
        found["back_after_media_child_kill"] = target(
            "agent: live video on both sides within 2 s of the kiosk's media child killed with SIGKILL "
            "(our own target: the issue sets none; raw aiortc has no child)",
            {"agent_s": kill_back},
            kill_back is not None and kill_back <= 2.0,
        )
        corrupt = {
            name: sum(outcome["corrupt_frames_shown"].values())
            for name, outcome in agent.items()
            if "corrupt_frames_shown" in outcome
        }
        raw_corrupt = {
            name: sum(outcome["corrupt_frames_shown"].values())
            for name, outcome in raw.items()
            if "corrupt_frames_shown" in outcome
        }
        found["corrupt_frames_shown"] = target(
            "agent: 0 corrupt frames shown (unreadable or gone backwards), both sides, every outage",
            {"agent": corrupt, "raw": raw_corrupt},
            sum(corrupt.values()) == 0,
        )
    end_call = results.get("end_call")
    if end_call is not None:
        worst = {
            name: None
            if outcome["not_ended"] or outcome["ended_on_both_ms"] is None
            else outcome["ended_on_both_ms"]["max"]
            for name, outcome in end_call["agent"].items()
        }
        found["end_call_within_1s"] = target(
            "agent: from one side's hangup() the call ended on both (the other side's call ended, "
            "both media children exited) within 1 s, max of each direction (raw aiortc: n/a)",
            {"agent_max_ms": worst, "raw": "n/a"},
            all(value is not None and value < 1000 for value in worst.values()),
        )
    return found


def resolution(text: str) -> tuple[int, int]:
    width, _, height = text.partition("x")
    if not (width.isdigit() and height.isdigit()) or int(width) < 320 or int(height) < 240:
        raise argparse.ArgumentTypeError(f"{text!r} is not WIDTHxHEIGHT of at least 320x240")
    if int(width) % 16 or int(height) % 2:
        raise argparse.ArgumentTypeError(f"{text!r}: the width must be a multiple of 16, the height even")
    return int(width), int(height)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="sustained window per measurement")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of media before a window starts")
    parser.add_argument("--setups", type=int, default=3, help="extra call setups per kind at the first size")
    parser.add_argument("--freeze", type=float, default=10.0, help="seconds coturn is frozen (SIGSTOP)")
    parser.add_argument(
        "--drop", type=float, default=10.0, help="seconds UDP between coturn's relay ports is dropped on lo"
    )
    parser.add_argument("--cap", type=float, default=40.0, help="longest wait for media after an outage")
    parser.add_argument("--settle", type=float, default=3.0, help="seconds watched after media is back")
    parser.add_argument(
        "--resolutions",
        type=lambda text: [resolution(item) for item in text.split(",")],
        default=[(640, 480), (1280, 720)],
        help="comma-separated WIDTHxHEIGHT; the first is also used for setups and recovery",
    )
    parser.add_argument("--no-recovery", dest="recovery", action="store_false", help="skip the outages")
    parser.add_argument("--end-calls", type=int, default=3, help="fresh calls ended from each side (0: none)")
    parser.add_argument(
        "--only",
        choices=("end-call",),
        help="measure this alone (end-call: no setups, no steady measurements, no outages)",
    )
    parser.add_argument(
        "--keep-logs", type=Path, help="an empty or new directory to keep the frame logs in (one per process)"
    )
    parser.add_argument(
        "--browser",
        action="store_true",
        help="the provider page in headless Chromium against the kiosk agent and bare aiortc "
        "(uses --warmup, --end-calls, --freeze, --drop, --cap, --settle)",
    )
    parser.add_argument(
        "--load", action="store_true", help="with --browser: one busy process per core beside the whole run"
    )
    args = parser.parse_args()
    for name in ("seconds", "freeze", "drop", "cap", "settle"):
        if getattr(args, name) <= 0:
            parser.error(f"--{name} must be positive")
    if args.warmup < 0 or args.setups < 0 or args.end_calls < 0:
        parser.error("--warmup, --setups and --end-calls must not be negative")
    if args.only == "end-call" and args.end_calls == 0:
        parser.error("--only end-call needs --end-calls of at least 1")
    if args.load and not args.browser:
        parser.error("--load needs --browser")
    if args.browser and (args.only is not None or args.end_calls == 0):
        parser.error("--browser measures its own set (no --only) and needs --end-calls of at least 1")
    settings = Settings(
        args.seconds,
        args.warmup,
        args.setups,
        args.freeze,
        args.drop,
        args.cap,
        args.settle,
        args.resolutions,
        args.recovery,
        iptables_unusable() if (args.recovery or args.browser) and args.only is None else None,
        args.end_calls,
        args.only == "end-call",
    )
    # Logs on stderr, so stdout is the JSON alone.
    logging.basicConfig(level=logging.ERROR, stream=sys.stderr)
    logging.getLogger("telehealth_client.media.signaling").setLevel(logging.WARNING)
    logs.quiet_url_loggers()
    if args.keep_logs is not None and args.keep_logs.exists() and any(args.keep_logs.iterdir()):
        parser.error(f"--keep-logs: {args.keep_logs} is not empty")
    with tempfile.TemporaryDirectory(prefix="telehealth-bench-call-") as directory:
        taps = args.keep_logs or Path(directory) / "taps"
        if args.browser:
            import bench_call_browser  # its own module: it drives Node and Chromium

            results = asyncio.run(bench_call_browser.run(settings, Path(directory), taps, args.load))
        else:
            results = asyncio.run(bench(settings, Path(directory), taps))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
