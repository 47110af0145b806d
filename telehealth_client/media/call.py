"""One call's RTCPeerConnection: relay-only through TURN, checked before anything is sent.

aiortc facts this module is built around (DESIGN.md, measured here): it uses only the first TURN
URL; it gathers every candidate before ``setLocalDescription`` returns (no outgoing trickle); with
wrong or expired TURN credentials it gathers no relay candidate and says nothing. So before a
connection is built, the TURN server is asked for an allocation with the credentials (a few
milliseconds when all is well): no answer within ``probe_timeout`` is "TURN server unreachable", a
401 is "TURN credentials refused" (the caller fetches fresh ones once, then gives up). And the
local description must hold a relay candidate before it is sent.

Public API:

- ``TurnConfig(urls, username, credential)``; ``await probe_turn(config, within=...)``.
- ``CallError(code, reason)``: ``turn-unreachable``, ``turn-refused``, ``no-relay-candidates``,
  ``sdp`` (a remote description that cannot be used), ``candidate``, ``closed``.
- ``MediaCall(turn, relay_only=True, tracks=(), on_frame=None)``: ``await offer() -> sdp``,
  ``await answer(remote_offer) -> sdp``, ``await accept_answer(sdp)``, ``await
  add_candidate(candidate)`` (the browser's ``toJSON()`` shape, with or without ``candidate:``),
  ``received`` (frames per kind), ``first_frame_at`` (loop time of the first remote video frame),
  ``stalls``; ``on_stall()`` is called when media that flowed stops for ``stall_after`` seconds
  (or none came ``connect_within`` seconds after the descriptions were exchanged) and no packet
  of any kind arrived meanwhile either, or at once when the TURN server says the call's
  allocation is gone (asked after ``SUSPECT_SECONDS`` without a frame: a restarted server);
  ``ice_transport``, ``await aclose()``. ``on_frame(kind, frame)`` sees every decoded remote
  video frame that is clean (see below) and every audio frame.
- Quality: once negotiated, the call samples its stats every ``quality_every`` seconds (a
  ``QualitySample`` in ``quality``, ``on_quality(sample)`` when the level, the remote
  picture size or the video bitrate ceiling changes, or the round trip becomes known) and holds the
  video encoder under the loss-based ceiling of ``media/quality.py``.
- Audio only: ``set_video_mode("audio-only")`` stops encoding and sending our video (the frame
  rate no longer counts in the quality level), ``"video"`` resumes it with a key frame. With a
  ``fallback`` (``media/fallback.py``; the patient side's) the call decides this itself from its
  samples and tells ``on_video_mode(mode)``.

Clean frames after a loss: aiortc's VP8 decoder decodes frames whose reference frames were lost
(60-80 of them after TURN froze for 10 s, DESIGN.md) and hands them on as if whole. A
``KeyframeGate`` stands in front of the video jitter buffer: from the start of the call and
whenever the buffer skips packets (it says so by asking for a PLI), encoded frames are dropped
before decoding until a key frame arrives, and a key frame is requested (PLI) again every
``PLI_SECONDS`` until it does. A key frame references nothing, so what follows it decodes cleanly.
The same when packets arrive ``STALE_SECONDS`` later than their RTP timestamps say: a relay that was
frozen releases the packets it buffered (seconds of pictures) when it resumes, clean but stale; the
key frame asked for then is the first live picture (a live stream at a low frame rate is on time:
its timestamps advance as it arrives). Kept connections make this matter: the call goes on on the
connection that stalled (PROTOCOL.md, Recovery).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, Final

from aioice.stun import TransactionFailed
from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCIceServer,
    RTCIceTransport,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc.mediastreams import MediaStreamError
from aiortc.rtcconfiguration import RTCIceTransportPolicy
from aiortc.sdp import candidate_from_sdp
from av import VideoFrame

from telehealth_client.logs import describe_exception
from telehealth_client.media.common import CallError, TurnConfig, check_sdp
from telehealth_client.media.fallback import VideoFallback, VideoMode
from telehealth_client.media.ice import create_turn_endpoint, relay_allocation_lost, turn_route
from telehealth_client.media.quality import (
    BitrateCeiling,
    JitterAdd,
    JitterControls,
    QualitySample,
    StatsMeter,
    cap_video_encoder,
    encoder_bitrate_range,
    gate_video_receiver,
    inbound_packets,
    internals_usable,
    pause_video_sender,
)
from telehealth_client.outbound import certificate_problem
from telehealth_client.protocol.messages import IceCandidate
from telehealth_client.tasks import OwnedTasks
from telehealth_client.tunnel import TunnelError

__all__ = ["CallError", "MediaCall", "TurnConfig", "check_sdp", "probe_turn", "relay_candidates"]

log = logging.getLogger(__name__)

PROBE_TIMEOUT_SECONDS: Final = 1.5  # two STUN tries: loopback answers in ms, a WAN in well under 1 s
# A probe made ahead (the media prepared while the consultation connects) stands for this long;
# an older one is made again, so that TURN gone meanwhile is told as such, not as no candidates.
PROBE_FRESH_SECONDS: Final = 30.0
STALL_SECONDS: Final = 2.0
# No remote frame for this long: the TURN allocation the call relays through is asked whether it is
# still there (every ALLOCATION_CHECK_SECONDS, until a frame or the stall). A restarted TURN server
# has forgotten it; its media never comes back, and the stall is declared then, not 2 s after.
SUSPECT_SECONDS: Final = 0.5
ALLOCATION_CHECK_SECONDS: Final = 0.5
CONNECT_SECONDS: Final = 10.0
# No frame but packets (the far end's receiver reports, every 0.5-1.5 s from aiortc, about 1 s from
# browsers): the path is watched over this window instead, so that a lost report or two is not a stall.
FEEDBACK_SECONDS: Final = 5.0
QUALITY_SECONDS: Final = 1.0
PLI_SECONDS: Final = 0.3  # a PLI lost on the way is asked again this soon
# Video packets this much later than their RTP timestamps say: a backlog (a frozen relay releases
# what it held when it resumes), not live pictures. Jitter is tens of milliseconds.
STALE_SECONDS: Final = 1.0
# A jitter buffer held back this long by a missing packet gives it up (see ``skip_jitter_hole``):
# a NACK's repair takes one round trip, well under this on any network a call can run on.
HOLE_SECONDS: Final = 0.5
# Video packets late without a break for this long: the path's delay has changed for good (a
# frozen relay's backlog comes out in a burst, well within this), and they are on time again.
REANCHOR_SECONDS: Final = 2.0
VIDEO_CLOCK_RATE: Final = 90_000  # RTP video clock (RFC 3551; VP8 and H.264 alike)
FrameHandler = Callable[[str, Any], None]
QualityHandler = Callable[[QualitySample], None]


class _Sink(asyncio.DatagramProtocol):
    pass


async def probe_turn(config: TurnConfig, *, within: float = PROBE_TIMEOUT_SECONDS) -> None:
    """An allocation with these credentials, released at once; CallError saying why it failed.
    Made the way the call's connections will be (``config.outbound``: the proxy, the CA bundle)."""
    server = config.first_turn
    try:
        await config.outbound.prepare()  # the CA bundle loaded in a thread, once
    except (OSError, ssl.SSLError) as exc:
        log.warning("turn probe failed error=%s", type(exc).__name__)
        raise CallError("turn-unreachable", "the CA bundle (ca_bundle) cannot be loaded") from None
    try:
        endpoint, _ = await asyncio.wait_for(
            create_turn_endpoint(
                _Sink,
                (server.host, server.port),
                config.username,
                config.credential,
                lifetime=60,
                ssl=server.tls,
                transport=server.transport,
                outbound=config.outbound,
            ),
            within,
        )
    except TransactionFailed as exc:
        log.warning("turn probe refused error=%s", type(exc).__name__)
        raise CallError("turn-refused", "TURN credentials refused") from None
    except ssl.SSLError as exc:  # turns: the server's certificate is not trusted, or no TLS there
        log.warning("turn probe failed error=%s", type(exc).__name__)
        untrusted = certificate_problem(exc)
        if untrusted is not None:
            reason = f"TURN server's TLS certificate is not trusted ({untrusted})"
            raise CallError("turn-unreachable", reason) from None
        raise CallError("turn-unreachable", "TURN server's TLS handshake failed") from None
    except TunnelError as exc:  # the proxy's own words: unreachable, or would not open the tunnel
        log.warning("turn probe failed error=%s reason=%s", type(exc).__name__, exc.reason)
        raise CallError("turn-unreachable", f"TURN server unreachable: {exc}") from None
    except (TimeoutError, OSError) as exc:
        log.warning("turn probe failed error=%s", type(exc).__name__)
        raise CallError("turn-unreachable", "TURN server unreachable") from None
    endpoint.close()


def relay_candidates(sdp: str) -> int:
    return sum(1 for line in sdp.splitlines() if line.startswith("a=candidate:") and " typ relay" in line)


def to_aiortc_candidate(candidate: IceCandidate) -> Any:
    """The browser's candidate as aiortc's; CallError("candidate") when it cannot be read."""
    text = candidate.candidate.strip()
    if text.startswith("candidate:"):
        text = text[len("candidate:") :]
    try:
        parsed = candidate_from_sdp(text)
    except Exception as exc:  # aiortc's parser asserts: any failure means a malformed candidate
        raise CallError("candidate", f"could not be parsed ({type(exc).__name__})") from None
    parsed.sdpMid = candidate.sdp_mid
    parsed.sdpMLineIndex = candidate.sdp_m_line_index
    return parsed


def is_key_frame(data: bytes) -> bool:
    """Whether an encoded video frame (as aiortc's depayloader assembles it) is a key frame."""
    if data.startswith((b"\x00\x00\x00\x01", b"\x00\x00\x01")):
        # H.264 Annex B: an IDR slice (NAL type 5) anywhere in the access unit.
        return any(unit and unit[0] & 0x1F == 5 for unit in data.split(b"\x00\x00\x01")[1:])
    # VP8 (RFC 6386 9.1): frame tag bit 0 clear, then the key frame start code 9d 01 2a.
    return len(data) >= 10 and data[0] & 1 == 0 and data[3:6] == b"\x9d\x01\x2a"


class KeyframeGate:
    """In front of a video receiver's jitter buffer: after a loss, no frame is decoded until a
    key frame arrives, so no frame decoded against missing references reaches anyone. Packets that
    arrive much later than their RTP timestamps say (a frozen relay releasing what it held) count
    as a loss too: clean pictures, but seconds old."""

    def __init__(
        self,
        jitter: JitterControls | JitterAdd,
        *,
        pli_every: float = PLI_SECONDS,
        stale_after: float = STALE_SECONDS,
        hole_after: float = HOLE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._jitter = jitter if isinstance(jitter, JitterControls) else JitterControls(jitter)
        self._pli_every = pli_every
        self._stale_after = stale_after
        self._hole_after = hole_after
        self._clock = clock
        self.waiting = True  # for the first key frame: the stream may start mid-way
        self.dropped = 0
        self.holes_skipped = 0
        self.backlogs_dropped = 0
        self._last_pli: float | None = None
        # Lateness is measured against the most punctual packet so far, not the previous one: a
        # frozen relay releases seconds of old packets at once, on time relative to each other.
        self._last_timestamp: int | None = None
        self._media = 0.0  # the last packet's media time, seconds from the first (unwrapped)
        self._anchor: float | None = None  # the least (arrival - media time) seen: a packet on time
        self._late_since: float | None = None  # packets late without a break since
        self._blocked_since: float | None = None  # packets went in and no frame came out since

    def __call__(self, packet: Any) -> tuple[bool, Any]:
        now = self._clock()
        if self._late(now, packet.timestamp) >= self._stale_after:
            self.waiting = True  # the key frame asked for now is the first live picture
        pli, frame = self._jitter.add(packet)
        if frame is not None:
            self._blocked_since = None
            behind = getattr(frame, "timestamp", None)
            if isinstance(behind, int) and _media_seconds(behind, packet.timestamp) >= self._stale_after:
                # Frames piled up in the buffer (behind a hole, or released by a frozen relay): it
                # hands out one per packet, so they would stay this late for good. Dropped, the key
                # frame asked for is live.
                self._jitter.drop_before(packet.timestamp)
                self.backlogs_dropped += 1
                frame, pli = None, True
            elif isinstance(behind, int) and self._frame_late(now, packet.timestamp, behind):
                # A stale picture, key frame or not (a relay's backlog holds the key frames asked
                # for before it froze): never shown, and no end to the wait for a live key frame
                # (asked for below, at most every ``pli_every``).
                frame = None
                self.waiting = True
        elif self._blocked_since is None:
            self._blocked_since = now
        elif now - self._blocked_since >= self._hole_after and self._jitter.skip_hole():
            # A packet not repaired by now will not be (NACK answers take a round trip): what
            # follows it comes out, and the key frame asked for makes it decodable again.
            self.holes_skipped += 1
            self._blocked_since = now
            pli = True
        if pli:
            self.waiting = True  # the buffer skipped packets: references are lost
        if frame is not None:
            if is_key_frame(frame.data):
                self.waiting = False
            elif self.waiting:
                self.dropped += 1
                frame = None
        if self.waiting and (self._last_pli is None or now - self._last_pli >= self._pli_every):
            pli = True
        if pli:
            self._last_pli = now
        return pli, frame  # a true pli makes the receiver send the PLI itself

    def _late(self, now: float, timestamp: int) -> float:
        """How much later than the most punctual packet so far this one arrived, in media terms
        (0 when on time). Late without a break for ``REANCHOR_SECONDS``: the path's delay has
        changed for good, and this is on time from now on."""
        if self._last_timestamp is not None:
            self._media += _media_seconds(self._last_timestamp, timestamp)
        self._last_timestamp = timestamp
        offset = now - self._media
        if self._anchor is None or offset < self._anchor:
            self._anchor = offset
        late = offset - self._anchor
        if late < self._stale_after / 2:
            self._late_since = None  # on time again (half the limit: jitter around it is no break)
        elif self._late_since is None:
            self._late_since = now
        elif now - self._late_since >= REANCHOR_SECONDS:
            self._anchor, self._late_since = offset, None
            return 0.0
        return late

    def _frame_late(self, now: float, newest: int, timestamp: int) -> bool:
        """Whether the frame of RTP ``timestamp`` is stale by the punctual packets' measure."""
        if self._anchor is None:
            return False
        media = self._media + _media_seconds(newest, timestamp)
        return now - self._anchor - media >= self._stale_after


def _media_seconds(earlier: int, later: int) -> float:
    """Media time from RTP timestamp ``earlier`` to ``later`` (negative if it went back; wraps)."""
    advance = (later - earlier) & 0xFFFFFFFF
    return (advance if advance < 0x80000000 else advance - 0x100000000) / VIDEO_CLOCK_RATE


def _shape(sample: QualitySample) -> tuple[int, int | None, int | None, int | None, bool]:
    """What a quality event is sent for when it changes (the round trip once, when first known:
    it needs a receiver report from the far end, which the first samples often lack)."""
    return sample.level, sample.width, sample.height, sample.video_kbps_ceiling, sample.rtt_ms is not None


class MediaCall:
    def __init__(
        self,
        turn: TurnConfig,
        *,
        relay_only: bool = True,
        tracks: Sequence[MediaStreamTrack] = (),
        on_frame: FrameHandler | None = None,
        probe_timeout: float = PROBE_TIMEOUT_SECONDS,
        stall_after: float = STALL_SECONDS,
        connect_within: float = CONNECT_SECONDS,
        on_stall: Callable[[], None] | None = None,
        on_quality: QualityHandler | None = None,
        quality_every: float = QUALITY_SECONDS,
        adapt_bitrate: bool = True,
        video_mode: VideoMode = "video",
        fallback: VideoFallback | None = None,
        on_video_mode: Callable[[VideoMode], None] | None = None,
    ) -> None:
        self._turn = turn
        self._relay_only = relay_only
        self._tracks = tuple(tracks)
        self._on_frame = on_frame
        self._probe_timeout = probe_timeout
        self._pc: RTCPeerConnection | None = None
        self._readers = OwnedTasks()
        self._closed = False
        self.received: dict[str, int] = {"audio": 0, "video": 0}
        self.first_frame_at: float | None = None
        # aiortc notices a dead path only after ~30 s, and never after a TURN restart: once media
        # has flowed, no remote frame of any kind for ``stall_after`` seconds is a stall.
        self._stall_after = stall_after
        self._connect_within = connect_within  # no media at all this long after setup: a stall too
        self._on_stall = on_stall
        self._stall_timer: asyncio.TimerHandle | None = None
        self._packets_when_armed: int | None = None
        self.stalls = 0
        self._last_frame_at: float | None = None
        self._allocation_watch: asyncio.Task[None] | None = None
        self._probe: asyncio.Task[float] | None = None  # a probe made ahead (check_turn_ahead)
        self._on_quality = on_quality
        self._quality_every = quality_every
        self._adapt_bitrate = adapt_bitrate
        self._quality_task: asyncio.Task[None] | None = None
        self._gates: list[KeyframeGate] = []
        self._video_size: tuple[int, int] | None = None
        self.quality: QualitySample | None = None
        self.bitrate: BitrateCeiling | None = None
        self.video_mode: VideoMode = video_mode
        self._meter = StatsMeter()
        self._meter.expect_video = video_mode == "video"
        self._fallback = fallback
        if fallback is not None:
            fallback.mode = video_mode
        self._on_video_mode = on_video_mode

    @property
    def dropped_frames(self) -> int:
        """Encoded video frames not decoded because their references were lost."""
        return sum(gate.dropped for gate in self._gates)

    @property
    def connection_state(self) -> str:
        return "closed" if self._pc is None else str(self._pc.connectionState)

    async def _connection(self) -> RTCPeerConnection:
        if self._closed:
            raise CallError("closed", "the call has ended")
        if self._pc is None:
            await self._turn_checked()
            server = RTCIceServer(
                urls=list(self._turn.ordered_urls),
                username=self._turn.username,
                credential=self._turn.credential,
            )
            policy = RTCIceTransportPolicy.RELAY if self._relay_only else RTCIceTransportPolicy.ALL
            # Always a list: with iceServers=None aiortc falls back to a public STUN server.
            pc = RTCPeerConnection(RTCConfiguration(iceServers=[server], iceTransportPolicy=policy))
            pc.on("track", self._on_track)
            for track in self._tracks:
                pc.addTrack(track)
            self._pc = pc
            self._pause_video(self.video_mode == "audio-only")
        return self._pc

    def set_video_mode(self, mode: VideoMode) -> None:
        """Send our video, or not (audio only); the quality level judges frame rate only with video."""
        if mode == self.video_mode:
            return
        self.video_mode = mode
        self._meter.expect_video = mode == "video"
        if self._fallback is not None:
            self._fallback.mode = mode
        self._pause_video(mode == "audio-only")
        log.info("call video mode=%s", mode)

    def _pause_video(self, paused: bool) -> None:
        if self._pc is None:
            return
        for sender in self._pc.getSenders():
            if sender.track is not None and sender.track.kind == "video":
                pause_video_sender(sender, paused)

    def _decide_video_mode(self, sample: QualitySample) -> None:
        if self._fallback is None:
            return
        floor = self.bitrate is None or self.bitrate.ceiling <= self.bitrate.minimum
        mode = self._fallback.observe(sample, bitrate_at_floor=floor)
        if mode is None:
            return
        self.set_video_mode(mode)
        if self._on_video_mode is not None:
            try:
                self._on_video_mode(mode)
            except Exception as exc:
                log.error("video mode handler failed error=%s", describe_exception(exc))

    def check_turn_ahead(self) -> None:
        """Probe TURN now, in the background: the offer or answer made within
        ``PROBE_FRESH_SECONDS`` of a probe that worked does not probe again."""
        if self._probe is None and not self._closed:
            self._probe = asyncio.ensure_future(self._probed())
            # A failure is raised to the offer or answer that awaits it; read here in any case.
            self._probe.add_done_callback(lambda task: task.cancelled() or task.exception())

    async def _probed(self) -> float:
        await probe_turn(self._turn, within=self._probe_timeout)
        return time.monotonic()

    async def _turn_checked(self) -> None:
        probe, self._probe = self._probe, None
        if probe is not None:
            try:
                if time.monotonic() - await probe < PROBE_FRESH_SECONDS:
                    return
            except CallError:
                pass  # probed again below: this time, the failure is the answer's
        await probe_turn(self._turn, within=self._probe_timeout)

    async def _described(self, pc: RTCPeerConnection) -> str:
        description = pc.localDescription
        if self._relay_only and relay_candidates(description.sdp) == 0:
            # Gathering produced nothing through TURN although the probe worked (an allocation
            # quota, a relay port range exhausted): nothing could connect.
            raise CallError("no-relay-candidates", "TURN gave no relay candidate")
        return str(description.sdp)

    async def offer(self) -> str:
        pc = await self._connection()
        async with self._discarded_on_failure(pc, "media", "no offer could be made"):
            sending = {track.kind for track in self._tracks}
            for kind in ("audio", "video"):
                if kind not in sending:
                    # No camera or microphone here: still receive the other side's (a one-way call).
                    pc.addTransceiver(kind, direction="recvonly")
            with turn_route(self._turn.outbound):  # aiortc connects to TURN in here
                await pc.setLocalDescription(await pc.createOffer())
            return await self._described(pc)

    async def answer(self, remote_offer: str) -> str:
        check_sdp(remote_offer, "offer")
        pc = await self._connection()
        # aiortc takes some broken offers and fails only while answering them, with exceptions of
        # every kind: that connection is unusable, the next offer gets a fresh one.
        async with self._discarded_on_failure(pc, "sdp", "the remote offer could not be answered"):
            await self._set_remote(pc, RTCSessionDescription(sdp=remote_offer, type="offer"))
            with turn_route(self._turn.outbound):
                await pc.setLocalDescription(await pc.createAnswer())
            described = await self._described(pc)
        self._arm_watchdog(self._connect_within)
        self._start_quality()
        return described

    @contextlib.asynccontextmanager
    async def _discarded_on_failure(
        self, pc: RTCPeerConnection, code: str, failure: str
    ) -> AsyncIterator[None]:
        """A connection whose offer or answer fails is discarded; aiortc's own exceptions become a
        ``CallError`` with ``code`` (``failure``, and the exception's type)."""
        try:
            yield
        except CallError:
            await self._discard(pc)
            raise
        except Exception as exc:
            await self._discard(pc)
            raise CallError(code, f"{failure} ({type(exc).__name__})") from None

    async def _discard(self, pc: RTCPeerConnection) -> None:
        if self._pc is pc:
            self._pc = None
        try:
            await pc.close()
        except Exception as exc:  # a connection that broke while it was set up may fail to close
            log.warning("discarded connection did not close cleanly error=%s", type(exc).__name__)

    async def accept_answer(self, sdp: str) -> None:
        check_sdp(sdp, "answer")
        if self._pc is None:
            raise CallError("sdp", "an answer came before our offer")
        await self._set_remote(self._pc, RTCSessionDescription(sdp=sdp, type="answer"))
        self._arm_watchdog(self._connect_within)
        self._start_quality()

    async def _set_remote(self, pc: RTCPeerConnection, description: RTCSessionDescription) -> None:
        try:
            await pc.setRemoteDescription(description)
        except Exception as exc:  # aiortc fails on broken descriptions with exceptions of every kind
            raise CallError(
                "sdp", f"the remote {description.type} could not be used ({type(exc).__name__})"
            ) from None

    async def add_candidate(self, candidate: IceCandidate) -> None:
        if not candidate.candidate.strip():
            return  # end-of-candidates: aiortc needs no marker
        if self._pc is None:
            raise CallError("candidate", "no connection to add it to")
        try:
            await self._pc.addIceCandidate(to_aiortc_candidate(candidate))
        except CallError:
            raise
        except Exception as exc:
            raise CallError("candidate", f"was refused ({type(exc).__name__})") from None

    def _on_track(self, track: MediaStreamTrack) -> None:
        if track.kind == "video" and self._pc is not None and internals_usable():
            # aiortc emits "track" before any RTP arrives: the gate sees the stream from its start.
            for receiver in self._pc.getReceivers():
                if receiver.track is track:
                    gate: KeyframeGate | None = None

                    def install(jitter: JitterControls) -> JitterAdd:
                        nonlocal gate
                        gate = KeyframeGate(jitter)
                        return gate

                    if gate_video_receiver(receiver, install) and gate is not None:
                        self._gates.append(gate)
        self._readers.spawn(self._read(track), f"read-{track.kind}")

    async def _read(self, track: MediaStreamTrack) -> None:
        kind = str(track.kind)
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            self.received[kind] = self.received.get(kind, 0) + 1
            self._last_frame_at = asyncio.get_running_loop().time()
            if self._allocation_watch is None and self._on_stall is not None and not self._closed:
                self._allocation_watch = asyncio.ensure_future(self._watch_allocation())
            if isinstance(frame, VideoFrame):
                self._video_size = (frame.width, frame.height)
                if self.first_frame_at is None:
                    self.first_frame_at = asyncio.get_running_loop().time()
            self._rearm_watchdog()
            if self._on_frame is not None:
                try:
                    self._on_frame(kind, frame)
                except Exception as exc:
                    log.error("frame handler failed error=%s", describe_exception(exc))

    def _rearm_watchdog(self) -> None:
        self._arm_watchdog(self._stall_after)

    def _arm_watchdog(self, seconds: float) -> None:
        if self._on_stall is None or self._closed:
            return
        if self._stall_timer is not None:
            self._stall_timer.cancel()
        self._stall_timer = asyncio.get_running_loop().call_later(seconds, self._stalled)
        self._packets_when_armed = None if self._pc is None else inbound_packets(self._pc)

    async def _watch_allocation(self) -> None:
        """While frames are missing and the stall not yet declared, ask TURN whether the call's
        allocation is still there; gone (a TURN restart), the stall is declared at once."""
        loop = asyncio.get_running_loop()
        while not self._closed:
            await asyncio.sleep(ALLOCATION_CHECK_SECONDS)  # the checking period, not a wait for anything
            last_frame_at = self._last_frame_at
            ice = self.ice_transport
            if last_frame_at is None or ice is None or self._stall_timer is None:
                continue  # no media yet, or the stall already declared
            if not SUSPECT_SECONDS <= loop.time() - last_frame_at < self._stall_after:
                continue
            lost = await relay_allocation_lost(ice, within=ALLOCATION_CHECK_SECONDS)
            if self._closed or not lost or self._last_frame_at != last_frame_at or self._stall_timer is None:
                continue  # closing, still there, a frame came meanwhile, or the stall already told
            self._stall_timer.cancel()
            try:
                self._declare_stall("the TURN allocation is gone")
            except Exception as exc:  # the handler's failure is not the watch's: it goes on
                log.error("stall handler failed error=%s", describe_exception(exc))

    @property
    def ice_transport(self) -> RTCIceTransport | None:
        """The ICE transport every track of the call is bundled on."""
        pc = self._pc
        if pc is None:
            return None
        return next(
            (t.receiver.transport.transport for t in pc.getTransceivers() if t.receiver.transport), None
        )

    def _stalled(self) -> None:
        self._stall_timer = None
        if self._closed:
            return
        before = self._packets_when_armed
        now = None if self._pc is None else inbound_packets(self._pc)
        if before is not None and now is not None and now > before:
            # No frame, but packets still arrive (at least the far end's receiver reports): the
            # path is alive and the far end sends no media (a one-way call, or its camera and
            # microphone gone). A rebuild would not change that, and would cut what we send.
            log.debug("no remote media but the path is alive packets=%d", now - before)
            self._arm_watchdog(max(self._stall_after, FEEDBACK_SECONDS))
            return
        self._declare_stall(f"no media for {self._stall_after:.1f} s")

    def _declare_stall(self, why: str) -> None:
        self._stall_timer = None
        self.stalls += 1
        log.warning("media stalled why=%s received=%s", why, self.received)
        assert self._on_stall is not None
        self._on_stall()

    def _start_quality(self) -> None:
        if self._quality_task is None and not self._closed:
            self._quality_task = asyncio.ensure_future(self._sample_quality())

    async def _sample_quality(self) -> None:
        meter = self._meter
        loop = asyncio.get_running_loop()
        while True:
            pc = self._pc
            if pc is not None:
                try:
                    report = await pc.getStats()
                except Exception as exc:  # a connection closing under us: try again next tick
                    log.warning("call stats failed error=%s", describe_exception(exc))
                else:
                    sample = meter.sample(
                        report.values(),
                        now=loop.time(),
                        video_frames=self.received.get("video", 0),
                        size=self._video_size,
                        ceiling=self._adapt(pc, meter),
                    )
                    if sample is not None:
                        self._report_quality(sample)
                        self._decide_video_mode(sample)
            await asyncio.sleep(self._quality_every)  # the sampling period, not a wait for anything

    def _adapt(self, pc: RTCPeerConnection, meter: StatsMeter) -> int | None:
        """Apply the loss-based ceiling (decided from the previous sample) to the video encoder."""
        if not self._adapt_bitrate or not internals_usable():
            return None
        for sender in pc.getSenders():
            if sender.track is None or sender.track.kind != "video":
                continue
            if self.bitrate is None:
                bounds = encoder_bitrate_range(sender)
                if bounds is None:
                    return None  # nothing encoded yet
                self.bitrate = BitrateCeiling(*bounds)
            if self.quality is not None:
                self.bitrate.update(self.quality.sent_loss_pct)
            cap_video_encoder(sender, self.bitrate.ceiling)
            return self.bitrate.ceiling
        return None

    def _report_quality(self, sample: QualitySample) -> None:
        previous, self.quality = self.quality, sample
        if previous is not None and _shape(previous) == _shape(sample):
            return  # told when the level, picture size or bitrate ceiling changes, not every second
        log.info("call quality level=%d fps=%.1f loss_pct=%.1f", sample.level, sample.fps, sample.loss_pct)
        if self._on_quality is not None:
            try:
                self._on_quality(sample)
            except Exception as exc:
                log.error("quality handler failed error=%s", describe_exception(exc))

    async def aclose(self) -> None:
        self._closed = True
        probe, self._probe = self._probe, None
        if probe is not None:
            probe.cancel()
            await asyncio.gather(probe, return_exceptions=True)
        if self._quality_task is not None:
            self._quality_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._quality_task
            self._quality_task = None
        if self._stall_timer is not None:
            self._stall_timer.cancel()
            self._stall_timer = None
        watch, self._allocation_watch = self._allocation_watch, None
        if watch is not None:
            watch.cancel()
            await asyncio.gather(watch, return_exceptions=True)  # whatever it ended with, close goes on
        await self._readers.cancel_all()
        if self._pc is not None:
            pc, self._pc = self._pc, None
            await pc.close()
