"""A bare aiortc peer on the provider's side of a consultation's ``.video`` channel, for the tests.

It stands for a provider app written by someone else: it uses the provider endpoint's own
session (bus and channels; the endpoint has no media of its own), calls the kiosk on a new
``RTCPeerConnection`` each time it is asked to, relay-only through the stack's coturn, and never
answers an offer: offers from the kiosk (its rebuilds) are only recorded, as an app that ignores
rebuild offers would. It reads the number drawn into each frame of the kiosk's video (the kiosk's
camera is a numbered file, ``numbered.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

from aiortc import (
    AudioStreamTrack,
    RTCConfiguration,
    RTCIceServer,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from aiortc.rtcconfiguration import RTCIceTransportPolicy
from av import VideoFrame

from telehealth_client.consultation.session import ConsultationSession, now
from telehealth_client.media.common import TurnConfig
from telehealth_client.protocol import channels
from telehealth_client.protocol.messages import Answer, EndCall, Message, Offer, Signal, encode
from telehealth_client.pubsub.bus import Envelope
from tests.support.media import strict_read
from tests.support.recorder import Recorder

from .numbered import NumberedVideoTrack

WAIT = 30.0


class RawPeer:
    def __init__(self, session: ConsultationSession, turn: TurnConfig) -> None:
        self.session = session
        self.channel = channels.video(session.consultation_id)
        self.user_id = session.consultation.user_id
        self.turn = turn
        self.signals: list[tuple[str, str, float]] = []  # (publisher, type, loop time) from the kiosk
        self.frames: list[tuple[int, float]] = []  # (number read, loop time) of the kiosk's video
        self.connections: list[RTCPeerConnection] = []
        self._answer: asyncio.Future[str] | None = None
        self._recorder = Recorder()  # wakes ``until`` at each signal or frame
        self._readers: set[asyncio.Task[None]] = set()
        self._remove = session.add_message_handler(self._on_message)

    def _connection(self) -> RTCPeerConnection:
        server = RTCIceServer(
            urls=list(self.turn.urls), username=self.turn.username, credential=self.turn.credential
        )
        pc = RTCPeerConnection(
            RTCConfiguration(iceServers=[server], iceTransportPolicy=RTCIceTransportPolicy.RELAY)
        )
        pc.addTrack(NumberedVideoTrack(1000))
        pc.addTrack(AudioStreamTrack())
        pc.on("track", self._on_track)
        self.connections.append(pc)
        return pc

    async def offer(self, *, setup: str | None = None) -> tuple[RTCPeerConnection, str]:
        """A new connection and its offer, published (``setup``: its ``a=setup`` instead of aiortc's
        ``actpass``); the connection and the kiosk's answer."""
        pc = self._connection()
        await pc.setLocalDescription(await pc.createOffer())
        sdp = pc.localDescription.sdp
        if setup is not None:
            sdp = sdp.replace("a=setup:actpass", f"a=setup:{setup}")
        self._answer = asyncio.get_running_loop().create_future()
        await self.publish(Offer(sender_id=self.user_id, timestamp=now(), sdp=sdp))
        answer = await asyncio.wait_for(self._answer, WAIT)
        return pc, answer

    async def call(self) -> RTCPeerConnection:
        """Call the kiosk on a new connection; returns once the kiosk's answer is set."""
        pc, answer = await self.offer()
        await pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
        return pc

    async def publish(self, signal: Signal) -> None:
        await self.session.bus.publish(self.channel, encode(signal), store=False)

    async def hang_up(self) -> None:
        await self.publish(EndCall(sender_id=self.user_id, timestamp=now()))

    async def _on_message(self, message: Message, envelope: Envelope) -> None:
        if envelope.channel != self.channel or envelope.publisher == self.user_id:
            return
        self.signals.append((envelope.publisher or "", str(getattr(message, "type", "")), _now()))
        if isinstance(message, Answer) and self._answer is not None and not self._answer.done():
            self._answer.set_result(message.sdp)
        self._recorder.changed()

    def _on_track(self, track: MediaStreamTrack) -> None:
        if track.kind == "video":
            task = asyncio.ensure_future(self._read(track))
            self._readers.add(task)
            task.add_done_callback(self._readers.discard)

    async def _read(self, track: MediaStreamTrack) -> None:
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            assert isinstance(frame, VideoFrame)
            self.frames.append((strict_read(frame), _now()))
            self._recorder.changed()

    async def until(self, condition: Callable[[], bool], within: float = WAIT) -> None:
        """Until ``condition()`` holds (checked at each signal or frame that arrives)."""
        await self._recorder.until(condition, within)

    def signalled(self, kind: str, publisher: str) -> list[float]:
        return [at for who, what, at in self.signals if who == publisher and what == kind]

    def frames_since(self, moment: float) -> list[int]:
        return [number for number, at in self.frames if at >= moment]

    async def aclose(self) -> None:
        self._remove()
        for task in list(self._readers):
            task.cancel()
        await asyncio.gather(*self._readers, return_exceptions=True)
        for pc in self.connections:
            with contextlib.suppress(Exception):
                await pc.close()


def _now() -> float:
    return asyncio.get_running_loop().time()


def any_of(*conditions: Callable[[], Any]) -> Callable[[], bool]:
    return lambda: any(condition() for condition in conditions)
