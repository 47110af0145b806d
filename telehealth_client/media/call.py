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
  ``stalls``; ``on_stall()`` is called when media that flowed stops for ``stall_after`` seconds,
  ``await aclose()``. ``on_frame(kind, frame)`` sees every decoded remote frame.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Any, Final

from aioice.stun import TransactionFailed
from aioice.turn import create_turn_endpoint
from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCIceServer,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc.mediastreams import MediaStreamError
from aiortc.rtcconfiguration import RTCIceTransportPolicy
from aiortc.sdp import candidate_from_sdp

from telehealth_client.logs import describe_exception
from telehealth_client.media.common import CallError, TurnConfig, check_sdp
from telehealth_client.protocol.messages import IceCandidate

__all__ = ["CallError", "MediaCall", "TurnConfig", "check_sdp", "probe_turn", "relay_candidates"]

log = logging.getLogger(__name__)

PROBE_TIMEOUT_SECONDS: Final = 3.0
STALL_SECONDS: Final = 2.0
CONNECT_SECONDS: Final = 10.0
FrameHandler = Callable[[str, Any], None]


class _Sink(asyncio.DatagramProtocol):
    pass


async def probe_turn(config: TurnConfig, *, within: float = PROBE_TIMEOUT_SECONDS) -> None:
    """An allocation with these credentials, released at once; CallError saying why it failed."""
    host, port, transport = config.first_turn
    try:
        endpoint, _ = await asyncio.wait_for(
            create_turn_endpoint(
                _Sink, (host, port), config.username, config.credential, lifetime=60, transport=transport
            ),
            within,
        )
    except TransactionFailed as exc:
        log.warning("turn probe refused error=%s", type(exc).__name__)
        raise CallError("turn-refused", "TURN credentials refused") from None
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
    ) -> None:
        self._turn = turn
        self._relay_only = relay_only
        self._tracks = tuple(tracks)
        self._on_frame = on_frame
        self._probe_timeout = probe_timeout
        self._pc: RTCPeerConnection | None = None
        self._readers: set[asyncio.Task[None]] = set()
        self._closed = False
        self.received: dict[str, int] = {"audio": 0, "video": 0}
        self.first_frame_at: float | None = None
        # aiortc notices a dead path only after ~30 s, and never after a TURN restart: once media
        # has flowed, no remote frame of any kind for ``stall_after`` seconds is a stall.
        self._stall_after = stall_after
        self._connect_within = connect_within  # no media at all this long after setup: a stall too
        self._on_stall = on_stall
        self._stall_timer: asyncio.TimerHandle | None = None
        self.stalls = 0

    @property
    def connection_state(self) -> str:
        return "closed" if self._pc is None else str(self._pc.connectionState)

    async def _connection(self) -> RTCPeerConnection:
        if self._closed:
            raise CallError("closed", "the call has ended")
        if self._pc is None:
            await probe_turn(self._turn, within=self._probe_timeout)
            server = RTCIceServer(
                urls=list(self._turn.urls), username=self._turn.username, credential=self._turn.credential
            )
            policy = RTCIceTransportPolicy.RELAY if self._relay_only else RTCIceTransportPolicy.ALL
            # Always a list: with iceServers=None aiortc falls back to a public STUN server.
            pc = RTCPeerConnection(RTCConfiguration(iceServers=[server], iceTransportPolicy=policy))
            pc.on("track", self._on_track)
            for track in self._tracks:
                pc.addTrack(track)
            self._pc = pc
        return self._pc

    async def _described(self, pc: RTCPeerConnection) -> str:
        description = pc.localDescription
        if self._relay_only and relay_candidates(description.sdp) == 0:
            # Gathering produced nothing through TURN although the probe worked (an allocation
            # quota, a relay port range exhausted): nothing could connect.
            raise CallError("no-relay-candidates", "TURN gave no relay candidate")
        return str(description.sdp)

    async def offer(self) -> str:
        pc = await self._connection()
        sending = {track.kind for track in self._tracks}
        for kind in ("audio", "video"):
            if kind not in sending:
                # No camera or microphone here: still receive the other side's (a one-way call).
                pc.addTransceiver(kind, direction="recvonly")
        await pc.setLocalDescription(await pc.createOffer())
        return await self._described(pc)

    async def answer(self, remote_offer: str) -> str:
        check_sdp(remote_offer, "offer")
        pc = await self._connection()
        try:
            await self._set_remote(pc, RTCSessionDescription(sdp=remote_offer, type="offer"))
            await pc.setLocalDescription(await pc.createAnswer())
        except CallError:
            await self._discard(pc)
            raise
        except (ValueError, KeyError, IndexError, TypeError, AttributeError) as exc:
            # aiortc takes some broken offers and only fails while answering them: that
            # connection is unusable now, the next offer gets a fresh one.
            await self._discard(pc)
            raise CallError("sdp", f"the remote offer could not be answered ({type(exc).__name__})") from None
        described = await self._described(pc)
        self._arm_watchdog(self._connect_within)
        return described

    async def _discard(self, pc: RTCPeerConnection) -> None:
        if self._pc is pc:
            self._pc = None
        await pc.close()

    async def accept_answer(self, sdp: str) -> None:
        check_sdp(sdp, "answer")
        if self._pc is None:
            raise CallError("sdp", "an answer came before our offer")
        await self._set_remote(self._pc, RTCSessionDescription(sdp=sdp, type="answer"))
        self._arm_watchdog(self._connect_within)

    async def _set_remote(self, pc: RTCPeerConnection, description: RTCSessionDescription) -> None:
        try:
            await pc.setRemoteDescription(description)
        except (ValueError, KeyError, IndexError, TypeError, AttributeError) as exc:
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
        except (ValueError, KeyError, TypeError) as exc:
            raise CallError("candidate", f"was refused ({type(exc).__name__})") from None

    def _on_track(self, track: MediaStreamTrack) -> None:
        task = asyncio.ensure_future(self._read(track))
        self._readers.add(task)
        task.add_done_callback(self._readers.discard)

    async def _read(self, track: MediaStreamTrack) -> None:
        kind = str(track.kind)
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            self.received[kind] = self.received.get(kind, 0) + 1
            if kind == "video" and self.first_frame_at is None:
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

    def _stalled(self) -> None:
        self._stall_timer = None
        if self._closed:
            return
        self.stalls += 1
        log.warning("media stalled seconds=%.1f received=%s", self._stall_after, self.received)
        assert self._on_stall is not None
        self._on_stall()

    async def aclose(self) -> None:
        self._closed = True
        if self._stall_timer is not None:
            self._stall_timer.cancel()
            self._stall_timer = None
        readers = list(self._readers)
        for task in readers:
            task.cancel()
        if readers:
            await asyncio.gather(*readers, return_exceptions=True)
        if self._pc is not None:
            pc, self._pc = self._pc, None
            await pc.close()
