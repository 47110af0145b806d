"""The call's media in a child process, and the agent's handle on it.

aiortc and PyAV hold native memory that grows over a kiosk's months of uptime, and a codec can
crash. So each call's media runs in a child process (``python -m telehealth_client.media.worker``)
that exits when the call ends, taking its native memory with it; if it dies, the agent reports it
and builds the call again in a fresh child while the consultation, chat and audit go on. The child
is started warm (it imports aiortc before it is needed) while the patient waits.

The agent and the child talk over the child's stdin and stdout, one JSON object per line, every
one a model of media/child_messages.py (requests with an ``id``, answered by a ``Reply``; events).
Secrets (TURN credentials) travel there, never in argv or the environment. ``Start`` keeps what the
next connection uses (its devices open with the offer or answer, or with ``Prepare``); an offer or
answer that fails is refused and the child is idle again, reusable for another ``Start``;
``Reset`` drops the connection; ``Close`` closes it, answers and exits at once. Events: ``Ready``
once aiortc is loaded, ``Heartbeat`` every second (with the resident memory; a child silent for
5 s hangs: ``silent`` resolves), ``FirstFrame``, ``Stalled`` (media that flowed stopped for 2 s:
the agent rebuilds the call, keeping this connection until the new one carries media),
``Resumed``, ``Quality`` (the call's QualitySample when its shape changes), ``DeviceFailed``,
``VideoModeDecided``, ``PreviewImage`` (only while the agent watches a preview: media/previews.py;
kept in the handle's ``previews``, not passed on). The child logs to stderr (the agent's journal).

Public API: ``await MediaWorker.spawn(on_event=None, env=None)``; the ``MediaBackend`` methods
(``offer``, ``answer``, ``accept_answer``, ``add_candidate``, ``aclose``) after ``await
start(turn, devices)`` (and ``prepare()``); ``reset()``, ``stats()``, ``preview()``, ``pid``,
``turn``, ``exited``; ``set_mute(mute)`` and ``mute`` (what it was last told);
``watch_preview(side)``, ``unwatch_preview(side)``, ``previews`` (a
``PreviewFeed``: ``latest(side)``, ``await next_after(side, seq, within)``).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import importlib
import itertools
import json
import logging
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import asdict
from typing import Any, Final

from pydantic import BaseModel, ValidationError

from telehealth_client.logs import describe_exception
from telehealth_client.media.call_options import Devices as Devices  # also its callers' name for it
from telehealth_client.media.child_messages import (
    UNMUTED,
    AcceptAnswer,
    AddCandidate,
    ChildEvent,
    Close,
    DeviceChoice,
    DeviceFailed,
    Fallback,
    FirstFrame,
    GetPreview,
    GetStats,
    Heartbeat,
    MakeAnswer,
    MakeOffer,
    MediaKind,
    Mute,
    Prepare,
    PreviewImage,
    PreviewSide,
    Quality,
    Ready,
    Reply,
    Request,
    RequestError,
    Reset,
    Resumed,
    RunEchoTest,
    SetMute,
    SetVideoMode,
    Stalled,
    Start,
    TurnServers,
    VideoModeDecided,
    WatchPreviews,
    parse_event,
    parse_request,
)
from telehealth_client.media.common import CallError, TurnConfig
from telehealth_client.media.fallback import FallbackSettings, VideoFallback, VideoMode
from telehealth_client.media.previews import PreviewFeed, PreviewPump
from telehealth_client.protocol.messages import IceCandidate

log = logging.getLogger(__name__)

READY_TIMEOUT_SECONDS: Final = 30.0
REQUEST_TIMEOUT_SECONDS: Final = 20.0
CLOSE_TIMEOUT_SECONDS: Final = 2.0  # the child closes in ~0.1 s, at most CALL_CLOSE_SECONDS
MAX_LINE_BYTES: Final = 1 << 20
HEARTBEAT_SECONDS: Final = 1.0
# The child's connection gets this long to close: aiortc releases its TURN allocation on the way
# and waits for TURN's answer, which never comes while TURN is frozen or out of reach. Exiting
# frees the connection anyway (TURN lets the allocation expire); a hangup must not wait for it.
CALL_CLOSE_SECONDS: Final = 0.5
# No line at all from the child for this long: it hangs (a stuck codec, a stopped process).
SILENT_SECONDS: Final = 5.0
ECHO_TEST_MARGIN_SECONDS: Final = 10.0  # the TURN probe and the round-trip grace, on a busy kiosk
# A watched preview: small JPEGs, a few a second (the technician page needs no more; the call's own
# 30 fps must not pay for it).
PREVIEW_FPS: Final = 8.0
PREVIEW_WIDTH: Final = 320
EventHandler = Callable[[ChildEvent], None]


class MediaWorker:
    """The agent's handle on one media child process (one call)."""

    def __init__(self, process: asyncio.subprocess.Process, on_event: EventHandler | None) -> None:
        self._process = process
        self._on_event = on_event
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[Reply]] = {}
        self._ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._reader = asyncio.ensure_future(self._read())
        self.exited: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        # Resolved when the child has said nothing (not even its heartbeat) for SILENT_SECONDS.
        self.silent: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        # Watched from its first line ("ready"): loading aiortc takes seconds on a busy machine and
        # is bounded by READY_TIMEOUT_SECONDS, not taken for a hang.
        self._silence: asyncio.TimerHandle | None = None
        self.turn: TurnConfig | None = None  # the credentials it was last started with
        self.mute = Mute()  # what it was last told to mute (at start or since)
        self.rss_mb: float | None = None  # its resident memory, as its last heartbeat said
        self.previews = PreviewFeed()  # the watched previews' newest images

    @property
    def pid(self) -> int:
        return self._process.pid

    @classmethod
    async def spawn(
        cls, *, on_event: EventHandler | None = None, env: Mapping[str, str] | None = None
    ) -> MediaWorker:
        """Start a child and wait until it has loaded aiortc (a warm start)."""
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "telehealth_client.media.worker",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            env=dict(env) if env is not None else None,
            limit=MAX_LINE_BYTES,
        )
        worker = cls(process, on_event)
        try:
            # Not wait_for: on 3.11 it swallows a cancellation that arrives as the child is ready.
            async with asyncio.timeout(READY_TIMEOUT_SECONDS):
                await asyncio.shield(worker._ready)
        except BaseException:
            await worker.aclose()
            raise
        return worker

    async def _read(self) -> None:
        assert self._process.stdout is not None
        try:
            while line := await self._process.stdout.readline():
                self._heard()
                try:
                    message = json.loads(line)
                except ValueError:
                    log.warning("media child wrote a line that is not JSON pid=%d", self.pid)
                    continue
                self._dispatch(message)
        except (ValueError, asyncio.LimitOverrunError):
            log.error("media child wrote an over-long line pid=%d", self.pid)
        except asyncio.CancelledError:
            # Its owner is gone without closing it (the agent stops): the child goes too, never
            # left running on its own, and the wait below ends.
            self.kill()
            raise
        finally:
            code = await self._process.wait()
            failure = CallError("media-process", f"the media process exited ({describe_exit(code)})")
            for future in self._waiting.values():
                if not future.done():
                    future.set_exception(failure)
            self._waiting.clear()
            if not self._ready.done():
                self._ready.set_exception(failure)
            if self._silence is not None:
                self._silence.cancel()
            self.previews.close()
            if not self.exited.done():
                self.exited.set_result(code)
            if self._process.stdin is not None:
                self._process.stdin.close()

    def _heard(self) -> None:
        if self._silence is not None:
            self._silence.cancel()
        if not self.silent.done():
            self._silence = asyncio.get_running_loop().call_later(SILENT_SECONDS, self._fell_silent)

    def _fell_silent(self) -> None:
        if not self.silent.done() and not self.exited.done():
            log.error("media child silent seconds=%.0f pid=%d", SILENT_SECONDS, self.pid)
            self.silent.set_result(None)

    def kill(self) -> None:
        """Kill the child at once (it hangs); ``exited`` resolves when it is gone."""
        with contextlib.suppress(ProcessLookupError):
            self._process.kill()

    def _dispatch(self, message: Any) -> None:
        if isinstance(message, dict) and "id" in message:
            self._replied(message)
            return
        try:
            event = parse_event(message)
        except ValidationError as exc:
            log.warning("media child event dropped pid=%d reason=%s", self.pid, describe_exception(exc))
            return
        if isinstance(event, PreviewImage):
            self.previews.received(event)  # many a second while watched: kept here, not passed on
            return
        if isinstance(event, Ready) and not self._ready.done():
            self._ready.set_result(None)
        elif isinstance(event, Heartbeat) and event.rss_kb is not None:
            self.rss_mb = event.rss_kb / 1024
        if self._on_event is not None:
            try:
                self._on_event(event)
            except Exception as exc:
                log.error("media event handler failed error=%s", describe_exception(exc))

    def _replied(self, message: dict[str, Any]) -> None:
        future = self._waiting.pop(message["id"], None) if isinstance(message["id"], int) else None
        if future is None or future.done():
            return
        try:
            future.set_result(Reply.model_validate(message))
        except ValidationError as exc:
            wrong = f"the media process answered wrongly ({exc.error_count()} errors)"
            future.set_exception(CallError("media", wrong))

    async def _request(self, request: Request, within: float = REQUEST_TIMEOUT_SECONDS) -> Reply:
        if self.exited.done() or self._process.stdin is None:
            raise CallError("media-process", "the media process has exited")
        request_id = next(self._ids)
        future: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        self._waiting[request_id] = future
        sent = request.model_copy(update={"id": request_id})
        line = json.dumps(sent.model_dump(mode="json", by_alias=True)) + "\n"
        try:
            self._process.stdin.write(line.encode())
            await self._process.stdin.drain()
            # Not wait_for: on 3.11 it swallows a cancellation that arrives with the reply, and a
            # hangup that cancels a connection being made would wait for it for ever.
            async with asyncio.timeout(within):
                answer = await future
        except (ConnectionError, BrokenPipeError):
            raise CallError("media-process", "the media process has exited") from None
        except TimeoutError:
            raise CallError(
                "media-process", f"the media process did not answer {request.op} in {within:.0f} s"
            ) from None
        finally:
            self._waiting.pop(request_id, None)
        if not answer.ok:
            raise CallError(answer.code or "media", answer.reason or "failed")
        return answer

    async def start(
        self,
        turn: TurnConfig,
        devices: Devices,
        *,
        video_mode: VideoMode = "video",
        fallback: FallbackSettings | None = None,
        mute: Mute = UNMUTED,
    ) -> None:
        """Keep what the next connection uses: TURN, devices, whether it sends video (``video_mode``),
        what is muted and, with ``fallback`` (the patient side), when it falls back to audio only
        by itself."""
        await self._request(
            Start(
                turn=TurnServers.of(turn),
                devices=DeviceChoice(**asdict(devices)),
                video_mode=video_mode,
                fallback=None if fallback is None else Fallback.of(fallback),
                mute=mute,
            )
        )
        self.turn = turn
        self.mute = mute

    async def set_mute(self, mute: Mute) -> None:
        """Send silence for audio and black frames for video where ``mute`` says, from now on."""
        await self._request(SetMute(mute=mute))
        self.mute = mute

    async def set_video_mode(self, mode: VideoMode) -> None:
        """Send our video, or not (``audio-only``), from now on."""
        await self._request(SetVideoMode(mode=mode))

    async def prepare(self) -> None:
        """After ``start``: open the devices and check TURN now, ahead of the offer or answer (the
        call is imminent: the consultation is connecting). The next offer or answer uses them."""
        await self._request(Prepare())

    async def offer(self) -> str:
        return str((await self._request(MakeOffer())).field("sdp"))

    async def answer(self, remote_offer: str) -> str:
        return str((await self._request(MakeAnswer(sdp=remote_offer))).field("sdp"))

    async def accept_answer(self, sdp: str) -> None:
        await self._request(AcceptAnswer(sdp=sdp))

    async def add_candidate(self, candidate: IceCandidate) -> None:
        await self._request(AddCandidate(candidate=candidate))

    async def reset(self) -> None:
        """Drop the child's connection and close its devices: it is idle, ready for ``start``."""
        await self._request(Reset())
        self.turn = None

    async def stats(self) -> dict[str, Any]:
        """``received`` (frames per kind), ``state``, ``quality`` (the last sample), ``camera_frames``."""
        return dict((await self._request(GetStats())).model_extra or {})

    async def preview(self) -> dict[str, bytes]:
        jpeg = (await self._request(GetPreview())).field("jpeg") or {}
        return {side: base64.b64decode(data) for side, data in jpeg.items()}

    async def watch_preview(self, side: PreviewSide) -> None:
        """One more watcher of ``side``'s preview: the child encodes it while anyone watches, and
        its images arrive in ``previews``. Pair each with ``unwatch_preview`` (also on failure)."""
        sides = self.previews.watch(side)
        if sides is not None:
            await self._request(WatchPreviews(sides=sides, per_second=PREVIEW_FPS, width=PREVIEW_WIDTH))

    async def unwatch_preview(self, side: PreviewSide) -> None:
        """One watcher less; the last one gone, the child stops encoding that side."""
        sides = self.previews.unwatch(side)
        if sides is not None and not self.exited.done():
            with contextlib.suppress(CallError):
                await self._request(WatchPreviews(sides=sides, per_second=PREVIEW_FPS, width=PREVIEW_WIDTH))

    async def echo_test(
        self, turn: TurnConfig, *, relay_only: bool, seconds: float, connect_within: float
    ) -> dict[str, Any]:
        """The preflight's media test in this child (media/echo_test.py): its outcome."""
        request = RunEchoTest(
            turn=TurnServers.of(turn), relay_only=relay_only, seconds=seconds, connect_within=connect_within
        )
        # The test's own bounds, and the probe and the round-trip grace beside them.
        within = connect_within + seconds + ECHO_TEST_MARGIN_SECONDS
        outcome = (await self._request(request, within=within)).field("outcome")
        return outcome if isinstance(outcome, dict) else {}

    async def aclose(self) -> None:
        """Ask the child to close the call and exit; kill it if it does not within a few seconds."""
        if not self._reader.done():  # its reader ends when the process has
            with contextlib.suppress(CallError):
                await self._request(Close(), within=CLOSE_TIMEOUT_SECONDS)
            try:
                await asyncio.wait_for(asyncio.shield(self.exited), CLOSE_TIMEOUT_SECONDS)
            except TimeoutError:
                log.warning("media child did not exit: killing it pid=%d", self.pid)
                with contextlib.suppress(ProcessLookupError):
                    self._process.kill()
        await asyncio.gather(self._reader, return_exceptions=True)
        if self._process.stdin is not None:
            self._process.stdin.close()


def describe_exit(code: int) -> str:
    return f"signal {-code}" if code < 0 else f"exit code {code}"


# -- the child ---------------------------------------------------------------------------------------


class _Child:
    """The child's side: one MediaCall and its devices, driven by requests on stdin."""

    def __init__(self) -> None:
        self._call: Any = None
        self._turn: TurnConfig | None = None
        self._devices: Devices | None = None
        self._closers: list[Callable[[], Any]] = []
        self._devices_to_open: list[Any] = []  # DeviceThreads waiting for our offer or answer to be out
        self._prepared = False  # a connection's devices are open and no offer or answer made yet
        self._camera: Any = None
        self._playback: Any = None
        # The newest remote frame (kept, not encoded: only a watched preview or GetPreview encodes).
        self._remote_frame: Any = None
        self._remote_frames = 0
        self._pump = PreviewPump(self._preview_source, _encode_preview, self.emit)
        self._first: set[str] = set()
        self._flowing: set[str] = set()  # the kinds arriving since the connection began or last stalled
        self._video_mode: VideoMode = "video"
        self._fallback: FallbackSettings | None = None  # the patient side: it decides audio only
        self._mute = Mute()
        self._microphone: Any = None

    @staticmethod
    def emit(message: BaseModel) -> None:
        sys.stdout.write(json.dumps(message.model_dump(mode="json")) + "\n")
        sys.stdout.flush()

    def open_devices(self) -> None:
        """The devices of the connection whose offer or answer just went out start now, not before:
        their threads' start (OpenCV opening the camera, PortAudio its streams) would hold up this
        process while it makes the answer. They have the far end's reply and ICE to get ready in."""
        devices, self._devices_to_open = self._devices_to_open, []
        for device in devices:
            device.open()

    def _device_failed(self, kind: str, reason: str) -> None:
        self.emit(DeviceFailed(kind=kind, reason=reason))

    def _on_frame(self, kind: str, frame: Any) -> None:
        if kind not in self._flowing:
            self._flowing.add(kind)
            media: MediaKind = "video" if kind == "video" else "audio"
            self.emit(Resumed(kind=media) if kind in self._first else FirstFrame(kind=media))
            self._first.add(kind)
        if kind == "audio" and self._playback is not None:
            self._playback.feed(frame)
        elif kind == "video":
            self._remote_frame = frame
            self._remote_frames += 1

    def _preview_source(self, side: PreviewSide) -> tuple[int, Any]:
        """(a number that grows with each new frame, the newest frame or None) of ``side``."""
        if side == "remote":
            return self._remote_frames, self._remote_frame
        return (0, None) if self._camera is None else self._camera.newest()

    async def _preview_now(self) -> dict[str, str]:
        """Each side's newest frame as JPEG (base64), encoded now in a thread."""
        jpeg: dict[str, str] = {}
        for side in ("local", "remote"):
            _number, frame = self._preview_source(side)
            if frame is not None:
                encoded = await asyncio.to_thread(_encode_preview, frame, PREVIEW_WIDTH)
                if encoded is not None:
                    jpeg[side] = base64.b64encode(encoded).decode()
        return jpeg

    def _on_stall(self) -> None:
        self._flowing.clear()
        self.emit(Stalled())

    async def start(self, request: Start) -> dict[str, Any]:
        """Keep what the connection will use; the devices open with its offer or answer (a child
        whose offer or answer failed is idle again, and may be started afresh for another), or
        with ``prepare``."""
        if self._call is not None:
            raise CallError("busy", "this media process holds a connection already")
        try:
            fallback = None if request.fallback is None else request.fallback.settings()
        except ValueError as exc:
            raise CallError("fallback", str(exc)) from None
        self._turn = request.turn.config()
        self._devices = Devices(**request.devices.model_dump())
        self._video_mode = request.video_mode
        self._fallback = fallback
        self._mute = request.mute
        return {}

    def set_mute(self, mute: Mute) -> dict[str, Any]:
        self._mute = mute
        self._apply_mute()
        return {}

    def _apply_mute(self) -> None:
        if self._camera is not None:
            self._camera.muted = self._mute.video
        if self._microphone is not None:
            self._microphone.muted = self._mute.audio

    def set_video_mode(self, mode: VideoMode) -> dict[str, Any]:
        self._video_mode = mode
        if self._call is not None:
            self._call.set_video_mode(mode)
        return {}

    def _video_mode_decided(self, mode: VideoMode) -> None:
        self._video_mode = mode
        self.emit(VideoModeDecided(mode=mode))

    async def _open(self) -> Any:
        from telehealth_client.media.call import MediaCall
        from telehealth_client.media.tracks import CameraTrack, MicrophoneTrack, Playback

        config, turn = self._devices, self._turn
        if config is None or turn is None:
            raise CallError("not-started", "start the call first")
        tracks: list[Any] = []
        if config.camera is not None:
            camera = CameraTrack(
                config.camera, is_file=config.camera_is_file, on_failure=self._device_failed, open_now=False
            )
            tracks.append(camera)
            self._camera = camera
            self._devices_to_open.append(camera.device)
            self._closers.append(camera.aclose)
        if config.microphone is not None:
            microphone = MicrophoneTrack(
                _device(config.microphone), on_failure=self._device_failed, open_now=False
            )
            tracks.append(microphone)
            self._microphone = microphone
            self._devices_to_open.append(microphone.device)
            self._closers.append(microphone.aclose)
        if config.speaker is not None:
            self._playback = Playback(_device(config.speaker), on_failure=self._device_failed, open_now=False)
            self._devices_to_open.append(self._playback.device)
            self._closers.append(self._playback.aclose)
        self._apply_mute()
        self._call = MediaCall(
            turn,
            relay_only=config.relay_only,
            tracks=tracks,
            on_frame=self._on_frame,
            on_stall=self._on_stall,
            on_quality=lambda sample: self.emit(Quality(**asdict(sample))),
            video_mode=self._video_mode,
            fallback=None if self._fallback is None else VideoFallback(self._fallback),
            on_video_mode=self._video_mode_decided,
        )
        return self._call

    async def prepare(self) -> dict[str, Any]:
        """The devices open now and TURN is checked in the background: the offer or answer that
        follows has neither to wait for."""
        if self._call is not None:
            raise CallError("busy", "this media process holds a connection already")
        call = await self._open()
        self._prepared = True
        call.check_turn_ahead()
        return {}

    async def _describe(self, request: MakeOffer | MakeAnswer) -> dict[str, Any]:
        """Our offer or answer on a connection of this child's own (prepared, or made now).
        Whatever goes wrong (TURN, an offer aiortc cannot take, its exception of any kind) is
        answered as a refusal, and the child is idle again: nothing connected, its devices closed."""
        if self._call is not None and not self._prepared:
            raise CallError("busy", "this media process holds a connection already")
        try:
            call = self._call if self._prepared else await self._open()
            self._prepared = False
            sdp = await call.answer(request.sdp) if isinstance(request, MakeAnswer) else await call.offer()
        except Exception as exc:
            await self._close()
            if isinstance(exc, CallError):
                raise
            log.warning("media child %s failed error=%s", request.op, describe_exception(exc))
            failure = type(exc).__name__
            if isinstance(request, MakeAnswer):
                raise CallError("sdp", f"the remote offer could not be answered ({failure})") from None
            raise CallError("media", f"no offer could be made ({failure})") from None
        return {"sdp": sdp}

    async def handle(self, request: Request) -> dict[str, Any]:
        """The request's answer fields; CallError for a refusal (``Close`` is the caller's)."""
        if isinstance(request, Start):
            return await self.start(request)
        if isinstance(request, SetVideoMode):
            return self.set_video_mode(request.mode)
        if isinstance(request, SetMute):
            return self.set_mute(request.mute)
        if isinstance(request, MakeOffer | MakeAnswer):
            return await self._describe(request)
        if isinstance(request, Prepare):
            return await self.prepare()
        if isinstance(request, RunEchoTest):
            from telehealth_client.media.echo_test import run_echo_test

            outcome = await run_echo_test(
                request.turn.config(),
                relay_only=request.relay_only,
                seconds=request.seconds,
                connect_within=request.connect_within,
            )
            return {"outcome": outcome}
        if isinstance(request, Reset):
            await self._close()  # idle again: started afresh for another connection
            return {}
        if isinstance(request, GetPreview):
            return {"jpeg": await self._preview_now()}
        if isinstance(request, WatchPreviews):
            self._pump.watch(request.sides, request.per_second, request.width)
            return {}
        call = self._call
        if isinstance(request, GetStats):
            camera_frames = None if self._camera is None else self._camera.captured
            if call is None:
                return {"received": {"audio": 0, "video": 0}, "state": "closed", "quality": None}
            quality = None if call.quality is None else asdict(call.quality)
            return {
                "received": dict(call.received),
                "state": call.connection_state,
                "quality": quality,
                "camera_frames": camera_frames,
            }
        if call is None:
            raise CallError("not-started", "no connection: offer or answer first")
        if isinstance(request, AcceptAnswer):
            await call.accept_answer(request.sdp)
            return {}
        if isinstance(request, AddCandidate):
            await call.add_candidate(request.candidate)
            return {}
        raise CallError("unknown-op", f"{request.op} is not handled here")

    async def _close(self) -> None:
        # The devices first: they are free for the next call's child whatever the network does.
        closers, self._closers = self._closers, []
        self._devices_to_open = []
        self._prepared = False
        self._camera = None
        self._microphone = None
        for closer in reversed(closers):
            with contextlib.suppress(Exception):
                await closer()
        self._playback = None
        self._remote_frame = None
        self._first.clear()
        self._flowing.clear()
        call, self._call = self._call, None
        if call is not None:
            try:
                await asyncio.wait_for(call.aclose(), CALL_CLOSE_SECONDS)
            except TimeoutError:
                log.warning("media child: the connection did not close in time (TURN out of reach)")

    async def aclose(self) -> None:
        await self._pump.aclose()
        await self._close()


def _encode_preview(frame: Any, width: int) -> bytes | None:
    from telehealth_client.media.tracks import encode_preview

    return encode_preview(frame, width)


def _device(name: str) -> int | str:
    return int(name) if name.isdigit() else name


async def _serve() -> int:
    import aiortc  # noqa: F401 (loaded now: the warm start the agent waits for)

    from telehealth_client.media.ice import tune_stun_retransmission

    tune_stun_retransmission()
    await _preload()

    child = _Child()
    child.emit(Ready(pid=os.getpid()))
    heartbeat = asyncio.ensure_future(_heartbeat(child))
    reader = asyncio.StreamReader(limit=MAX_LINE_BYTES)
    loop = asyncio.get_running_loop()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    try:
        while line := await reader.readline():
            try:
                request = parse_request(json.loads(line))
            except ValueError:
                log.warning("media child: a line that is not JSON was ignored")
                continue
            except RequestError as exc:
                log.warning("media child: request refused field=%s reason=%s", exc.field, exc.reason)
                if exc.request_id is not None:
                    child.emit(Reply(id=exc.request_id, ok=False, code="request", reason=str(exc)))
                continue
            if isinstance(request, Close):
                await child.aclose()
                child.emit(Reply(id=request.id, ok=True))
                # Devices and connection are closed and the agent is told: nothing is left to
                # finish. The interpreter's own teardown (aiortc, PyAV, OpenCV, PortAudio) took
                # another ~230 ms, which a hangup's "ended on both sides" waited for.
                sys.stderr.flush()
                os._exit(0)
            try:
                answer = await child.handle(request)
                child.emit(Reply(id=request.id, ok=True, **answer))
                child.open_devices()
            except CallError as exc:
                child.emit(Reply(id=request.id, ok=False, code=exc.code, reason=exc.reason))
            except Exception as exc:
                log.error("media child request failed op=%s error=%s", request.op, describe_exception(exc))
                child.emit(Reply(id=request.id, ok=False, code="media", reason=type(exc).__name__))
    finally:
        heartbeat.cancel()
        await asyncio.gather(heartbeat, return_exceptions=True)
        await child.aclose()
    return 0  # the agent closed our stdin: it is gone, and so is the call


async def _preload() -> None:
    """What the first offer or answer would otherwise wait for, done before "ready": the first
    import of OpenCV and PortAudio (a few hundred ms on a busy kiosk) and aiortc's first connection.
    None of it is needed to run: a machine without PortAudio still makes calls (its audio device
    fails when opened, and the call goes on without it)."""
    for module in ("cv2", "sounddevice", "telehealth_client.media.call", "telehealth_client.media.tracks"):
        try:
            importlib.import_module(module)
        except Exception as exc:  # OSError: no libportaudio; ImportError: no OpenCV
            log.warning("media child: %s not preloaded error=%s", module, describe_exception(exc))
    try:
        await _warm_aiortc()
    except Exception as exc:
        log.warning("media child: aiortc not warmed up error=%s", describe_exception(exc))


async def _warm_aiortc() -> None:
    """A connection made and dropped before "ready": the first one in a process pays for loading
    what aiortc loads lazily (its certificate's crypto, SDP and codec paths), and that must not be
    the answer to a real offer."""
    from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

    # No ICE server at all (aiortc's default is a public STUN server): host candidates only, never
    # a packet off this machine.
    offerer, answerer = (RTCPeerConnection(RTCConfiguration(iceServers=[])) for _ in range(2))
    try:
        offerer.addTransceiver("audio")
        offerer.addTransceiver("video")
        await offerer.setLocalDescription(await offerer.createOffer())
        await answerer.setRemoteDescription(
            RTCSessionDescription(sdp=offerer.localDescription.sdp, type="offer")
        )
        await answerer.setLocalDescription(await answerer.createAnswer())
    finally:
        await offerer.close()
        await answerer.close()


async def _heartbeat(child: _Child) -> None:
    """A line every second while the child's loop runs: the agent tells a hung child by its
    silence, and one that grew too big by the resident memory it carries."""
    while True:
        child.emit(Heartbeat(rss_kb=_resident_kb()))
        await asyncio.sleep(HEARTBEAT_SECONDS)


def _resident_kb() -> int | None:
    """This process's resident memory (Linux ``/proc``; None elsewhere)."""
    try:
        with open("/proc/self/statm") as statm:
            resident_pages = int(statm.read().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return resident_pages * os.sysconf("SC_PAGE_SIZE") // 1024


def main() -> None:
    # The agent's level (its environment is the child's): the journal gets what the agent's would.
    level = os.environ.get("TELEHEALTH_LOG_LEVEL", "INFO").upper()
    logging.basicConfig(
        stream=sys.stderr,
        level=level if level in ("DEBUG", "INFO", "WARNING", "ERROR") else "INFO",
        format="media-child %(levelname)s %(message)s",
    )
    # aioice and aiortc narrate every ICE check at INFO: only their warnings reach the journal.
    for chatty in ("aioice", "aiortc"):
        logging.getLogger(chatty).setLevel(logging.WARNING)
    sys.exit(asyncio.run(_serve()))


if __name__ == "__main__":
    main()
