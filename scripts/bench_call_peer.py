"""One raw aiortc peer for scripts/bench_call.py: a bare RTCPeerConnection in its own process.

aiortc's defaults, nothing of the agent's call machinery (no TURN probe, no watchdog, no rebuild):
relay-only through the TURN server it is given, sending the same camera track as the agent's media
child (the agent's CameraTrack on the same numbered file), counting the remote video frames it
decodes. Driven like the agent's media child, one JSON object per line on stdin/stdout:
``start`` (turn, camera), ``offer``, ``answer`` (sdp), ``accept-answer`` (sdp), ``add-candidate``
(a browser's trickled ``RTCIceCandidate.toJSON()``: ``candidate``, ``sdpMid``, ``sdpMLineIndex``),
``close``; events
``ready``, ``first-frame`` and ``resumed`` (a remote frame after at least ``GAP_SECONDS`` without
one). Frames are logged by frame_tap (its directory on PYTHONPATH, ``BENCH_CALL_TAP_DIR`` set).
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any, Final

import frame_tap
from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from aiortc.rtcconfiguration import RTCIceTransportPolicy
from aiortc.sdp import candidate_from_sdp

from telehealth_client.media.tracks import CameraTrack

GAP_SECONDS: Final = 1.0


def emit(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


class RawPeer:
    def __init__(self) -> None:
        self.pc: RTCPeerConnection | None = None
        self.camera: CameraTrack | None = None
        self.readers: set[asyncio.Task[None]] = set()

    def start(self, turn: dict[str, Any], camera: str) -> None:
        server = RTCIceServer(urls=turn["urls"], username=turn["username"], credential=turn["credential"])
        self.pc = RTCPeerConnection(
            RTCConfiguration(iceServers=[server], iceTransportPolicy=RTCIceTransportPolicy.RELAY)
        )
        self.pc.on("track", self.on_track)
        self.camera = CameraTrack(camera, is_file=True)
        self.pc.addTrack(self.camera)

    def on_track(self, track: MediaStreamTrack) -> None:
        if track.kind == "video":
            task = asyncio.ensure_future(self.read(track))
            self.readers.add(task)
            task.add_done_callback(self.readers.discard)

    async def read(self, track: MediaStreamTrack) -> None:
        assert frame_tap.LOG is not None
        last: float | None = None
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            frame_tap.LOG.on_received(frame)
            now = time.monotonic()
            if last is None:
                emit({"event": "first-frame", "kind": "video"})
            elif now - last >= GAP_SECONDS:
                emit({"event": "resumed", "gap": round(now - last, 3)})
            last = now

    async def handle(self, op: str, request: dict[str, Any]) -> dict[str, Any]:
        if op == "start":
            self.start(request["turn"], request["camera"])
            return {}
        assert self.pc is not None
        if op == "offer":
            await self.pc.setLocalDescription(await self.pc.createOffer())
            return {"sdp": self.pc.localDescription.sdp}
        if op == "answer":
            await self.pc.setRemoteDescription(RTCSessionDescription(sdp=request["sdp"], type="offer"))
            await self.pc.setLocalDescription(await self.pc.createAnswer())
            return {"sdp": self.pc.localDescription.sdp}
        if op == "accept-answer":
            await self.pc.setRemoteDescription(RTCSessionDescription(sdp=request["sdp"], type="answer"))
            return {}
        if op == "add-candidate":
            line = str(request["candidate"]).removeprefix("candidate:")
            if line:  # "": the end of the browser's candidates
                candidate = candidate_from_sdp(line)
                candidate.sdpMid = request.get("sdpMid")
                candidate.sdpMLineIndex = request.get("sdpMLineIndex")
                await self.pc.addIceCandidate(candidate)
            return {}
        raise ValueError(f"no such request: {op}")

    async def aclose(self) -> None:
        for task in list(self.readers):
            task.cancel()
        await asyncio.gather(*self.readers, return_exceptions=True)
        if self.pc is not None:
            await self.pc.close()
        if self.camera is not None:
            await self.camera.aclose()


async def serve() -> None:
    peer = RawPeer()
    reader = asyncio.StreamReader(limit=1 << 20)
    loop = asyncio.get_running_loop()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    emit({"event": "ready"})
    closing: int | None = None
    try:
        while line := await reader.readline():
            request = json.loads(line)
            if request["op"] == "close":
                closing = request["id"]
                break
            try:
                emit({"id": request["id"], "ok": True, **await peer.handle(request["op"], request)})
            except Exception as exc:
                emit({"id": request["id"], "ok": False, "reason": type(exc).__name__})
    finally:
        await peer.aclose()
    if closing is not None:
        emit({"id": closing, "ok": True})


if __name__ == "__main__":
    asyncio.run(serve())
