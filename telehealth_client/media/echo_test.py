"""The preflight's media test, run in a media child (``RunEchoTest``, media/child_messages.py).

The agent never loads aiortc (tests/unit/test_media_imports.py), so the TURN allocation and the
media test run in a media child, started, watched and closed by the same ``MediaSupervisor`` as a
call's. Two relay-only peer connections in that process call each other through the TURN server:
the kiosk side sends audio and changing video, the echo side sends back what it receives.
Everything crosses TURN twice, as a real call's media would cross it once each way.

``run_echo_test(turn, relay_only, seconds, connect_within)`` returns ``{"turn": {"ok", "ms" |
"code", "reason"}, "media": {...}}``; ``media`` holds the kiosk side's ``getStats()`` at the first
echoed frame and ``seconds`` later, the negotiated clock rates and the echoed frame counts. The
agent judges them (``preflight.py``). Logs go to stderr, by type and place only.
"""

from __future__ import annotations

import asyncio
import fractions
import logging
import time
from typing import Any, Final

import numpy as np
from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection
from aiortc.mediastreams import AudioStreamTrack, MediaStreamError, MediaStreamTrack, VideoStreamTrack
from aiortc.rtcconfiguration import RTCIceTransportPolicy
from aiortc.sdp import SessionDescription
from av import VideoFrame

from telehealth_client.media.call import probe_turn, relay_candidates
from telehealth_client.media.common import CallError, TurnConfig
from telehealth_client.media.ice import turn_route
from telehealth_client.tasks import OwnedTasks

log = logging.getLogger(__name__)

# Small frames: the test measures the path, and the encoder's CPU must not be the bottleneck.
WIDTH: Final = 320
HEIGHT: Final = 240
BLOCK: Final = 8
SAMPLE_SECONDS: Final = 0.25
RTT_GRACE_SECONDS: Final = 3.0
# Every stats field the agent's judgement reads (aiortc's stats are dataclasses with more).
_STATS_FIELDS: Final = ("packetsReceived", "packetsLost", "jitter", "roundTripTime", "bytesReceived")


class MovingTrack(VideoStreamTrack):
    """Video that changes in every frame, like a person in front of a camera: coarse blocks that
    move, so the encoder sends a steady stream near a call's bitrate. (Full-frame noise would make
    VP8 send several Mbit/s, a load no call has, and the loss it causes would be the test's own.)"""

    def __init__(self) -> None:
        super().__init__()
        random = np.random.default_rng()
        self._blocks = random.integers(16, 240, (HEIGHT * 3 // 2 // BLOCK, WIDTH // BLOCK), dtype=np.uint8)
        self._count = 0

    async def recv(self) -> VideoFrame:
        pts, time_base = await self.next_timestamp()
        self._count += 1
        shifted = np.roll(self._blocks, self._count, axis=1)
        planes = np.repeat(np.repeat(shifted, BLOCK, axis=0), BLOCK, axis=1)
        planes = np.roll(planes, self._count * 3, axis=0)
        frame = VideoFrame.from_ndarray(np.ascontiguousarray(planes), format="yuv420p")
        frame.pts = pts
        frame.time_base = fractions.Fraction(time_base.numerator, time_base.denominator)
        return frame


def _peer(turn: TurnConfig, relay_only: bool) -> RTCPeerConnection:
    server = RTCIceServer(urls=list(turn.ordered_urls), username=turn.username, credential=turn.credential)
    policy = RTCIceTransportPolicy.RELAY if relay_only else RTCIceTransportPolicy.ALL
    # Always a list: with iceServers=None aiortc falls back to a public STUN server.
    return RTCPeerConnection(RTCConfiguration(iceServers=[server], iceTransportPolicy=policy))


def clock_rates(sdp: str) -> dict[str, int]:
    """The clock rate of each media kind's first (negotiated) codec in an answer."""
    rates: dict[str, int] = {}
    for media in SessionDescription.parse(sdp).media:
        if media.rtp.codecs:
            rates.setdefault(media.kind, int(media.rtp.codecs[0].clockRate))
    return rates


async def snapshot(pc: RTCPeerConnection) -> dict[str, Any]:
    """The kiosk side's stats as plain data, with the monotonic time they were taken."""
    stats = []
    for item in (await pc.getStats()).values():
        entry: dict[str, Any] = {"type": item.type, "kind": getattr(item, "kind", None)}
        entry.update({name: getattr(item, name) for name in _STATS_FIELDS if hasattr(item, name)})
        stats.append(entry)
    return {"at": time.monotonic(), "stats": stats}


def _has_round_trip(sample: dict[str, Any]) -> bool:
    return any(stat.get("roundTripTime") is not None for stat in sample["stats"])


class EchoTest:
    """The kiosk side and the echo side, and the frames that came back to the kiosk side."""

    def __init__(self, turn: TurnConfig, relay_only: bool) -> None:
        self.kiosk = _peer(turn, relay_only)
        self.echo = _peer(turn, relay_only)
        self._relay_only = relay_only
        self._outbound = turn.outbound
        self.frames: dict[str, int] = {"audio": 0, "video": 0}
        self._back: dict[str, asyncio.Event] = {"audio": asyncio.Event(), "video": asyncio.Event()}
        self._readers = OwnedTasks()
        self.kiosk.on("track", self._returned)
        # The echo side sends each track it receives straight back.
        self.echo.on("track", self.echo.addTrack)

    def _returned(self, track: MediaStreamTrack) -> None:
        self._readers.spawn(self._count(track), f"echo-{track.kind}")

    async def _count(self, track: MediaStreamTrack) -> None:
        kind = str(track.kind)
        while True:
            try:
                await track.recv()
            except MediaStreamError:
                return
            self.frames[kind] += 1
            self._back[kind].set()

    async def connect(self) -> str:
        """Offer and answer exchanged in-process; the answer's SDP. CallError without relay candidates."""
        self.kiosk.addTrack(AudioStreamTrack())
        self.kiosk.addTrack(MovingTrack())
        with turn_route(self._outbound):  # aiortc connects to TURN in here (the proxy, the CA bundle)
            await self.kiosk.setLocalDescription(await self.kiosk.createOffer())
        offer = self.kiosk.localDescription
        if self._relay_only and relay_candidates(offer.sdp) == 0:
            raise CallError("no-relay-candidates", "TURN gave no relay candidate")
        await self.echo.setRemoteDescription(offer)
        with turn_route(self._outbound):
            await self.echo.setLocalDescription(await self.echo.createAnswer())
        answer = self.echo.localDescription
        await self.kiosk.setRemoteDescription(answer)
        return str(answer.sdp)

    async def first_echo(self, within: float) -> bool:
        """True once echoed media of either kind came back within ``within`` seconds."""
        waits = [asyncio.ensure_future(event.wait()) for event in self._back.values()]
        try:
            done, _ = await asyncio.wait(waits, timeout=within, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for wait in waits:
                wait.cancel()
            await asyncio.gather(*waits, return_exceptions=True)
        return bool(done)

    async def aclose(self) -> None:
        await self._readers.cancel_all()
        await self.kiosk.close()
        await self.echo.close()


async def media_test(
    turn: TurnConfig, relay_only: bool, seconds: float, connect_within: float
) -> dict[str, Any]:
    test = EchoTest(turn, relay_only)
    started = time.monotonic()
    try:
        answer = await asyncio.wait_for(test.connect(), connect_within)
        if not await test.first_echo(max(0.0, connect_within - (time.monotonic() - started))):
            return {
                "ok": False,
                "code": "no-media",
                "reason": f"no media came back through TURN within {connect_within:.0f} s",
            }
        connected_ms = (time.monotonic() - started) * 1000
        samples = [await snapshot(test.kiosk)]
        # A measurement window, not synchronisation: the path is sampled for ``seconds``, often
        # enough to see each receiver report's round trip (aiortc sends one every 0.5-1.5 s).
        for _ in range(max(1, round(seconds / SAMPLE_SECONDS))):
            await asyncio.sleep(SAMPLE_SECONDS)
            samples.append(await snapshot(test.kiosk))
        # A round trip needs our sender report and the echo side's receiver report on it; in a
        # short window on a busy machine that pair may not have happened yet: sample a little longer.
        for _ in range(round(RTT_GRACE_SECONDS / SAMPLE_SECONDS)):
            if any(_has_round_trip(sample) for sample in samples):
                break
            await asyncio.sleep(SAMPLE_SECONDS)
            samples.append(await snapshot(test.kiosk))
        return {
            "ok": True,
            "connect_ms": connected_ms,
            "clock_rates": clock_rates(answer),
            "frames": dict(test.frames),
            "samples": samples,
        }
    except TimeoutError:
        return {
            "ok": False,
            "code": "no-media",
            "reason": f"no connection through TURN within {connect_within:.0f} s",
        }
    finally:
        await test.aclose()


async def run_echo_test(
    turn: TurnConfig, *, relay_only: bool, seconds: float, connect_within: float
) -> dict[str, Any]:
    started = time.monotonic()
    try:
        await probe_turn(turn)
    except CallError as exc:
        return {"turn": {"ok": False, "code": exc.code, "reason": exc.reason}, "media": None}
    outcome: dict[str, Any] = {"turn": {"ok": True, "ms": (time.monotonic() - started) * 1000}}
    try:
        outcome["media"] = await media_test(turn, relay_only, seconds, connect_within)
    except CallError as exc:
        outcome["media"] = {"ok": False, "code": exc.code, "reason": exc.reason}
    return outcome
