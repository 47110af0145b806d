"""The call's own media and what it does with the other side's: camera, microphone, speaker, previews.

- Muting (``muted`` on either track): the track goes on at the same pace with black frames or
  silence, so the far end's decoder and stall watch see a stream as usual.
- ``CameraTrack``: OpenCV reads the camera (the device check's source setting: ``/dev/videoN``, an
  index, a file or a URL) in its own thread and keeps only the newest frame; ``recv`` hands out the
  newest frame it has not handed out yet. When the encoder falls behind, the frames it had no time
  for are skipped, never queued (aiortc queues: measured 2 s of backlog on a busy machine). A file
  is paced at its frame rate and loops (a test pattern); a device paces itself.
- ``MicrophoneTrack``: sounddevice blocking reads (no callback streams: the service runs with
  MemoryDenyWriteExecute) of 20 ms at 48 kHz mono in its own thread, paced to real time (the ALSA
  ``file`` plugin replays with no pacing), into a short queue whose oldest frames go first.
- ``Playback``: the other side's audio, resampled to 48 kHz mono, written to the output device by a
  thread through a short queue (late audio is dropped, not delayed).
- ``encode_preview(image, width)``: one frame (a camera image or a decoded ``VideoFrame``) as a
  small JPEG, for a watched preview (media/previews.py; in a thread: it touches no track).
  ``CameraTrack.newest()`` is the camera's newest image.

A device that fails mid-call ends its track (``MediaStreamError`` to the sender: the call goes on
with the other) and is reported through ``on_failure(kind, reason)``, called on the event loop.
"""

from __future__ import annotations

import asyncio
import collections
import fractions
import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Final

import numpy as np
from aiortc import MediaStreamTrack
from aiortc.mediastreams import MediaStreamError
from av import AudioFrame, AudioResampler, VideoFrame

from telehealth_client.logs import describe_exception

log = logging.getLogger(__name__)

VIDEO_CLOCK: Final = 90_000
SAMPLE_RATE: Final = 48_000
AUDIO_FRAME_SAMPLES: Final = 960  # 20 ms
AUDIO_QUEUE_FRAMES: Final = 10  # 200 ms: beyond that, audio is late and the oldest goes
FILE_FPS_FALLBACK: Final = 30.0
FailureHandler = Callable[[str, str], None]


def _tell(loop: asyncio.AbstractEventLoop, on_failure: FailureHandler | None, kind: str, reason: str) -> None:
    """From a device thread: ``on_failure(kind, reason)`` on the event loop, when someone listens."""
    if on_failure is not None:
        loop.call_soon_threadsafe(on_failure, kind, reason)


def _report(
    loop: asyncio.AbstractEventLoop,
    on_failure: FailureHandler | None,
    kind: str,
    device: str,
    work: str,
    exc: Exception,
) -> None:
    """From a device thread whose ``work`` raised: logged, and told as ``the {device} failed``."""
    log.error("%s failed error=%s", work, describe_exception(exc))
    _tell(loop, on_failure, kind, f"the {device} failed ({type(exc).__name__})")


class _Latest:
    """One slot shared by a producer thread and the event loop: the newest item wins."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._lock = threading.Lock()
        self._item: Any = None
        self._sequence = 0
        self._ready = asyncio.Event()

    def put(self, item: Any) -> None:  # from the producer thread
        with self._lock:
            self._item = item
            self._sequence += 1
        self.loop.call_soon_threadsafe(self._ready.set)

    def peek(self) -> tuple[int, Any]:
        with self._lock:
            return self._sequence, self._item

    async def newer_than(self, sequence: int) -> tuple[int, Any]:
        while True:
            with self._lock:
                if self._sequence > sequence:
                    return self._sequence, self._item
            self._ready.clear()
            with self._lock:
                if self._sequence > sequence:
                    continue
            await self._ready.wait()


class DeviceThread:
    """The thread that works one device: started by ``open()`` (at once unless the owner asks
    otherwise: a media child opens its devices only after its offer or answer is out, so that their
    start does not hold up the answer), joined by ``join()`` if it ever ran."""

    def __init__(self, target: Callable[[], None], name: str, *, open_now: bool) -> None:
        self._thread = threading.Thread(target=target, name=name, daemon=True)
        if open_now:
            self.open()

    def open(self) -> None:
        if self._thread.ident is None:
            self._thread.start()

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    async def join(self) -> None:
        if self._thread.ident is not None:
            await asyncio.to_thread(self._thread.join, 5.0)


class _DeviceTrack(MediaStreamTrack):
    """A track fed by one device thread: stopping the track stops the thread; ``aclose`` waits for it."""

    _stopping: threading.Event
    device: DeviceThread

    def stop(self) -> None:
        self._stopping.set()
        super().stop()

    async def aclose(self) -> None:
        self.stop()
        await self.device.join()


class CameraTrack(_DeviceTrack):
    kind = "video"

    def __init__(
        self,
        source: str | int,
        *,
        is_file: bool = False,
        on_failure: FailureHandler | None = None,
        open_now: bool = True,
    ) -> None:
        super().__init__()
        self._source = source
        self._is_file = is_file
        self._on_failure = on_failure
        self._slot = _Latest(asyncio.get_running_loop())
        self._stopping = threading.Event()
        self._failed: str | None = None
        self._delivered = 0
        self._started_at: float | None = None
        self.captured = 0  # frames read from the camera
        self.sent = 0  # frames handed to the encoder (captured - sent were skipped)
        self.muted = False  # black frames instead of the camera's, at the same pace and size
        self.device = DeviceThread(self._capture, "camera-capture", open_now=open_now)

    def _capture(self) -> None:
        import cv2

        capture = cv2.VideoCapture(self._source)
        try:
            if not capture.isOpened():
                self._fail("the camera could not be opened")
                return
            fps = capture.get(cv2.CAP_PROP_FPS) or FILE_FPS_FALLBACK
            period = 1.0 / fps if self._is_file and fps > 0 else 0.0
            next_at = time.monotonic()
            while not self._stopping.is_set():
                ok, image = capture.read()
                if not ok:
                    if self._is_file and self.captured:
                        capture.set(cv2.CAP_PROP_POS_FRAMES, 0)  # a test pattern loops
                        continue
                    self._fail("the camera stopped delivering frames")
                    return
                self.captured += 1
                self._slot.put(image)
                if period:
                    next_at += period
                    delay = next_at - time.monotonic()
                    if delay > 0:
                        self._stopping.wait(delay)  # pacing a file to its frame rate
                    else:
                        next_at = time.monotonic()
        except Exception as exc:
            self._fail(f"the camera failed ({type(exc).__name__})")
            log.error("camera capture failed error=%s", describe_exception(exc))
        finally:
            capture.release()

    def _fail(self, reason: str) -> None:  # in the capture thread
        self._failed = reason
        if not self._stopping.is_set():
            # Before the track's end wakes the sender: reported first.
            _tell(self._slot.loop, self._on_failure, "video", reason)
        self._slot.put(None)

    def newest(self) -> tuple[int, Any]:
        """(how many frames were read, the newest image or None): what a preview shows."""
        return self._slot.peek()

    async def wait_captured(self, count: int) -> None:
        """Until at least ``count`` frames were read from the camera (or it failed)."""
        await self._slot.newer_than(count - 1)

    async def recv(self) -> VideoFrame:
        if self.readyState != "live":
            raise MediaStreamError
        self._delivered, image = await self._slot.newer_than(self._delivered)
        if image is None:
            self.stop()
            raise MediaStreamError
        now = time.monotonic()
        if self._started_at is None:
            self._started_at = now
        if self.muted:
            image = np.zeros_like(image)
        frame = VideoFrame.from_ndarray(image, format="bgr24")
        frame.pts = int((now - self._started_at) * VIDEO_CLOCK)
        frame.time_base = fractions.Fraction(1, VIDEO_CLOCK)
        self.sent += 1
        return frame


class MicrophoneTrack(_DeviceTrack):
    kind = "audio"

    def __init__(
        self, device: int | str | None, *, on_failure: FailureHandler | None = None, open_now: bool = True
    ) -> None:
        super().__init__()
        self._device = device
        self._on_failure = on_failure
        self._event_loop = asyncio.get_running_loop()
        self._frames: collections.deque[np.ndarray[Any, Any] | None] = collections.deque(
            maxlen=AUDIO_QUEUE_FRAMES
        )
        self._ready = asyncio.Event()
        self._stopping = threading.Event()
        self._pts = 0
        self.dropped = 0
        self.muted = False  # silence instead of the microphone's samples, at the same pace
        self.device = DeviceThread(self._capture, "microphone-capture", open_now=open_now)

    def _push(self, samples: np.ndarray[Any, Any] | None) -> None:
        if len(self._frames) == self._frames.maxlen:
            self.dropped += 1
        self._frames.append(samples)
        self._event_loop.call_soon_threadsafe(self._ready.set)

    def _capture(self) -> None:
        try:
            import sounddevice as sd

            with sd.InputStream(
                device=self._device,
                samplerate=SAMPLE_RATE,
                channels=1,
                dtype="int16",
                blocksize=AUDIO_FRAME_SAMPLES,
            ) as stream:
                started = time.monotonic()
                count = 0
                while not self._stopping.is_set():
                    samples, _overflowed = stream.read(AUDIO_FRAME_SAMPLES)
                    self._push(np.ascontiguousarray(samples.reshape(1, -1)))
                    count += 1
                    ahead = started + count * AUDIO_FRAME_SAMPLES / SAMPLE_RATE - time.monotonic()
                    if ahead > 0:
                        self._stopping.wait(ahead)  # a file device replays faster than real time
        except Exception as exc:
            if not self._stopping.is_set():
                _report(self._event_loop, self._on_failure, "audio", "microphone", "microphone capture", exc)
            self._push(None)

    async def recv(self) -> AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        while not self._frames:
            self._ready.clear()
            if self._frames:
                break
            await self._ready.wait()
        samples = self._frames.popleft()
        if samples is None:
            self.stop()
            raise MediaStreamError
        if self.muted:
            samples = np.zeros_like(samples)
        frame = AudioFrame.from_ndarray(samples, format="s16", layout="mono")
        frame.sample_rate = SAMPLE_RATE
        frame.pts = self._pts
        frame.time_base = fractions.Fraction(1, SAMPLE_RATE)
        self._pts += AUDIO_FRAME_SAMPLES
        return frame


class Playback:
    """The other side's audio on the output device; frames that would play late are dropped."""

    def __init__(
        self, device: int | str | None, *, on_failure: FailureHandler | None = None, open_now: bool = True
    ) -> None:
        self._device = device
        self._on_failure = on_failure
        self._event_loop = asyncio.get_running_loop()
        self._resampler = AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)
        self._queue: collections.deque[np.ndarray[Any, Any]] = collections.deque(maxlen=AUDIO_QUEUE_FRAMES)
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self.played = 0
        self.device = DeviceThread(self._play, "speaker-playback", open_now=open_now)

    def feed(self, frame: AudioFrame) -> None:
        for resampled in self._resampler.resample(frame):
            self._queue.append(resampled.to_ndarray().reshape(-1, 1))
        self._wake.set()

    def _play(self) -> None:
        try:
            import sounddevice as sd

            with sd.OutputStream(
                device=self._device, samplerate=SAMPLE_RATE, channels=1, dtype="int16"
            ) as out:
                while not self._stopping.is_set():
                    self._wake.wait(0.1)
                    self._wake.clear()
                    while self._queue and not self._stopping.is_set():
                        out.write(self._queue.popleft())
                        self.played += 1
        except Exception as exc:
            if not self._stopping.is_set():
                _report(self._event_loop, self._on_failure, "speaker", "speaker", "playback", exc)

    async def aclose(self) -> None:
        self._stopping.set()
        self._wake.set()
        await self.device.join()


PREVIEW_JPEG_QUALITY: Final = 70


def encode_preview(source: VideoFrame | np.ndarray[Any, Any], width: int) -> bytes | None:
    """``source`` (a decoded frame, or a camera image in BGR) scaled to ``width`` pixels wide (never
    up) as JPEG; None if it cannot be encoded. Safe in a worker thread: it only reads ``source``."""
    import cv2

    image: np.ndarray[Any, Any]
    if isinstance(source, VideoFrame):
        scaled = min(width, source.width)
        height = max(2, int(source.height * scaled / max(source.width, 1)) // 2 * 2)
        image = source.reformat(width=scaled, height=height, format="bgr24").to_ndarray()
    else:
        rows, columns = source.shape[:2]
        if columns > width:
            height = max(2, int(rows * width / max(columns, 1)) // 2 * 2)
            image = cv2.resize(source, (width, height), interpolation=cv2.INTER_AREA)
        else:
            image = source
    ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, PREVIEW_JPEG_QUALITY])
    return encoded.tobytes() if ok else None
