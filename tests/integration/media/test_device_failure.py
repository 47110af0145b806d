"""A camera or microphone that fails mid-call: the call goes on with the other, and the failure
reaches the patient's hub as MediaFailed. Real devices that really fail, chosen by the test:

- the camera is a named pipe carrying a Y4M stream that this test writes at 30 fps; OpenCV reads it
  as a device (it paces itself, no looping). Closing the pipe ends the stream, so OpenCV's
  ``read()`` fails as it does for an unplugged camera.
- the microphone is an ALSA ``file`` plugin device that also writes what it captured to a named
  pipe this test drains. Closing the drain makes the plugin's next write fail (EPIPE), which ALSA
  turns into -EIO for the read in progress: PortAudio raises, as for a microphone unplugged mid-read.
  (Deleting the plugin's input file would not do it: the open descriptor keeps reading, and at the
  file's end the plugin just carries on.)

Both endpoints are real (relay, clinic, coturn, media child processes); the provider's media child
counts what it receives, so "the call goes on" is measured, not assumed.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from collections.abc import Callable
from pathlib import Path

import cv2
import pytest

from devices import synthetic
from telehealth_client import events
from telehealth_client.consultation.patient import PatientEndpoint
from telehealth_client.media.consultation_call import ConsultationCall, MediaOptions
from telehealth_client.media.worker import Devices, MediaWorker
from telehealth_client.protocol.messages import ConsultationState as S
from tests.support.consultation import (
    CONSULTATION,
    Parts,
    RecordingHub,
    check_in_and_join,
)
from tests.support.media import child_env, connecting

from .numbered import HEIGHT, WIDTH, draw, write_numbered_video

pytestmark = pytest.mark.integration

WAIT = 30.0
FPS = 30
AUDIO_PER_SECOND = 50  # 20 ms Opus frames
VIDEO_PER_SECOND = 30
POLL_SECONDS = 0.1  # stats are pulled from the media child: asked again at this pace
POLLS = int(WAIT / POLL_SECONDS)
STALL_WINDOW = 2.5  # seconds watched after a failure: longer than the stall watchdog's 2 s


class PipeCamera:
    """A camera OpenCV reads from a named pipe: numbered 640x480 frames at 30 fps until unplugged."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / "camera.y4m"
        os.mkfifo(self.path)
        self.written = 0
        self._unplugged = threading.Event()
        self._opened = threading.Event()
        self._thread = threading.Thread(target=self._feed, name="pipe-camera", daemon=True)
        self._thread.start()

    def _feed(self) -> None:
        with contextlib.suppress(BrokenPipeError), open(self.path, "wb") as pipe:  # until it is read
            self._opened.set()
            pipe.write(f"YUV4MPEG2 W{WIDTH} H{HEIGHT} F{FPS}:1 Ip A1:1 C420jpeg\n".encode())
            while not self._unplugged.is_set():
                self.written += 1
                frame = cv2.cvtColor(draw(self.written), cv2.COLOR_BGR2YUV_I420)
                pipe.write(b"FRAME\n" + frame.tobytes())
                pipe.flush()
                self._unplugged.wait(1 / FPS)  # the camera's frame clock, not a wait for anything

    def unplug(self) -> None:
        self._unplugged.set()

    async def aclose(self) -> None:
        self.unplug()
        if not self._opened.is_set():
            # Nobody opened the camera: open the other end once so the feeder's open returns.
            with contextlib.suppress(OSError):
                os.close(os.open(self.path, os.O_RDONLY | os.O_NONBLOCK))
        await asyncio.to_thread(self._thread.join, 5.0)


class PipeMicrophone:
    """An ALSA microphone (a tone) whose captured audio also goes to a pipe drained on the loop."""

    NAME = "unpluggable_mic"
    SPEAKER = "null_speaker"

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        tone = synthetic.write_pcm(directory / "tone.raw", "tone", seconds=30.0)
        self.captured = directory / "captured.fifo"
        os.mkfifo(self.captured)
        self.config = directory / "asound.conf"
        self.config.write_text(
            "pcm.null { type null }\n"
            f'pcm.{self.NAME} {{ type file; slave.pcm "null"; file "{self.captured.resolve()}";'
            f' format "raw"; infile "{tone.resolve()}"; hint {{ show on; description "Microphone" }} }}\n'
            f'pcm.{self.SPEAKER} {{ type file; slave.pcm "null"; file "/dev/null"; format "raw";'
            ' hint { show on; description "Speaker" } }\n'
            f'pcm.default {{ type asym; playback.pcm "{self.SPEAKER}"; capture.pcm "{self.NAME}" }}\n'
        )
        self._loop = asyncio.get_running_loop()
        # Open before any child opens the device (PortAudio opens every device when it starts);
        # the second, idle writer keeps the drain from reading end-of-file between those opens.
        self._reader: int | None = os.open(self.captured, os.O_RDONLY | os.O_NONBLOCK)
        self._keeper: int | None = os.open(self.captured, os.O_WRONLY | os.O_NONBLOCK)
        self._loop.add_reader(self._reader, self._drain)

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "ALSA_CONFIG_PATH": str(self.config)}

    def _drain(self) -> None:
        assert self._reader is not None
        with contextlib.suppress(BlockingIOError):
            while os.read(self._reader, 1 << 16):
                pass

    def unplug(self) -> None:
        """No reader left: the device's next write fails."""
        if self._reader is not None:
            self._loop.remove_reader(self._reader)
            os.close(self._reader)
            self._reader = None
        if self._keeper is not None:
            os.close(self._keeper)
            self._keeper = None


def patient_media(tmp_path: Path, camera: str, *, camera_is_file: bool) -> MediaOptions:
    """The patient's media: ``camera``, and child_env's tone microphone and speaker."""
    env, devices = child_env(tmp_path, "patient")
    return MediaOptions(Devices(camera, camera_is_file, devices.microphone, devices.speaker), env)


def flowing(kind: str) -> Callable[[object], bool]:
    return lambda e: isinstance(e, events.MediaFlowing) and e.media == kind


def failed(source: str) -> Callable[[object], bool]:
    return lambda e: isinstance(e, events.MediaFailed) and e.source == source


def assert_nothing_rebuilt(patient_hub: RecordingHub, provider_hub: RecordingHub, failure: object) -> None:
    """No stall on either side (a missing kind is no dead path while the other flows), so no
    rebuild (it would announce media flowing again), and the consultation stayed in-progress."""
    for hub in (patient_hub, provider_hub):
        assert not [e for e in hub.items if failed("network")(e)]
        assert len([e for e in hub.items if flowing("audio")(e) or flowing("video")(e)]) <= 2
        assert hub.states()[-1] == S.IN_PROGRESS
    assert [e for e in patient_hub.items if isinstance(e, events.MediaFailed)] == [failure]


async def call_in_progress(
    parts: Parts, tmp_path: Path, media: MediaOptions
) -> tuple[PatientEndpoint, ConsultationCall, RecordingHub, RecordingHub]:
    """The provider calls the checked-in patient; returns once media flows both ways, in progress."""
    patient_hub, provider_hub = RecordingHub(), RecordingHub()
    env, devices = child_env(tmp_path, "provider")
    provider = await parts.provider(provider_hub, media=MediaOptions(devices, env))
    await parts.record_consent()
    patient = parts.patient(patient_hub, media=media)
    await check_in_and_join(patient, provider, patient_hub, provider_hub)
    provider_call = await provider.call(CONSULTATION)
    for hub in (patient_hub, provider_hub):
        await hub.wait_for(flowing("video"), within=WAIT)
        await hub.wait_for(flowing("audio"), within=WAIT)
        await hub.wait_state(S.IN_PROGRESS, within=WAIT)
    return patient, provider_call, patient_hub, provider_hub


async def received(call: ConsultationCall) -> dict[str, int]:
    worker = call.worker
    assert isinstance(worker, MediaWorker), "no media child: the call is being rebuilt"
    counts = (await worker.stats())["received"]
    return {"audio": int(counts["audio"]), "video": int(counts["video"])}


async def received_at_least(call: ConsultationCall, kind: str, frames: int) -> dict[str, int]:
    """The call's received counts once ``kind`` reached ``frames`` (asked a bounded number of times)."""
    for _ in range(POLLS):
        counts = await received(call)
        if counts[kind] >= frames:
            return counts
        await asyncio.sleep(POLL_SECONDS)  # the child's counters grow at the frame pace
    raise AssertionError(f"{kind} stopped at {counts[kind]} frames, {frames} expected")


async def the_call_goes_on_without(
    stopped: str, provider_call: ConsultationCall, patient_call: ConsultationCall
) -> None:
    """The provider keeps receiving the other kind for longer than the stall window while
    ``stopped`` stays stopped, and the patient keeps receiving the provider's video."""
    kept = "audio" if stopped == "video" else "video"
    per_second = AUDIO_PER_SECOND if kept == "audio" else VIDEO_PER_SECOND
    # A second of the kept kind after the failure: whatever of the failed kind was on its way is in.
    before = await received_at_least(provider_call, kept, (await received(provider_call))[kept] + per_second)
    patient_before = await received(patient_call)
    after = await received_at_least(provider_call, kept, before[kept] + int(STALL_WINDOW * per_second))
    assert after[stopped] == before[stopped], f"the provider still receives {stopped}"
    await received_at_least(patient_call, "video", patient_before["video"] + VIDEO_PER_SECOND)


async def lost_mid_call(
    parts: Parts, tmp_path: Path, media: MediaOptions, unplug: Callable[[], object], kind: str, reason: str
) -> None:
    """A call in progress with the patient's ``media``; ``unplug`` takes its ``kind`` device away: it
    is reported with ``reason`` and the call goes on live without it, rebuilding nothing."""
    patient, provider_call, patient_hub, provider_hub = await call_in_progress(parts, tmp_path, media)
    patient_call = patient.call
    assert patient_call is not None

    unplug()
    [failure] = await patient_hub.wait_for(failed(kind), within=WAIT)
    assert failure == events.MediaFailed(CONSULTATION, kind, reason)
    await the_call_goes_on_without(kind, provider_call, patient_call)
    assert_nothing_rebuilt(patient_hub, provider_hub, failure)
    # The call is live without it, and says which device it lost.
    assert patient_call.status == events.CallStatusChanged(
        CONSULTATION, "live", media=("audio", "video"), lost_devices=(kind,)
    )
    assert patient.state is S.IN_PROGRESS


async def test_a_camera_unplugged_mid_call_is_reported_and_the_call_goes_on_with_audio(
    parts: Parts, tmp_path: Path
) -> None:
    camera = PipeCamera(tmp_path)
    try:
        # Not a file to the media child: a device, read unpaced and never looped.
        media = patient_media(tmp_path, str(camera.path), camera_is_file=False)
        await lost_mid_call(
            parts, tmp_path, media, camera.unplug, "video", "the camera stopped delivering frames"
        )
    finally:
        await camera.aclose()


async def test_a_microphone_failing_mid_call_is_reported_and_the_call_goes_on_with_video(
    parts: Parts, tmp_path: Path
) -> None:
    microphone = PipeMicrophone(tmp_path / "patient-alsa")
    try:
        video = write_numbered_video(tmp_path / "patient.mkv", frames=60)
        media = MediaOptions(
            Devices(str(video), True, PipeMicrophone.NAME, PipeMicrophone.SPEAKER), microphone.env
        )
        await lost_mid_call(
            parts, tmp_path, media, microphone.unplug, "audio", "the microphone failed (PortAudioError)"
        )
    finally:
        microphone.unplug()


async def test_a_camera_that_cannot_open_while_the_call_is_prepared_is_reported_when_it_starts(
    parts: Parts, tmp_path: Path
) -> None:
    """The kiosk opens its devices as soon as the provider has joined (the call is prepared): a
    camera that fails then belongs to no call yet. Its failure is told when that child takes the
    call, not dropped, and the call goes on with audio."""
    media = patient_media(tmp_path, str(tmp_path / "no-such-camera.mkv"), camera_is_file=True)
    patient, provider, patient_hub, provider_hub = await connecting(parts, tmp_path, media)
    call = patient.call
    assert call is not None
    prepared = await asyncio.wait_for(call.prepared(), WAIT)
    assert prepared is not None  # prepared, its camera failed on the way
    assert not [e for e in patient_hub.items if failed("video")(e)]  # no call yet: nothing told
    await provider.call(CONSULTATION)
    [failure] = await patient_hub.wait_for(failed("video"), within=WAIT)
    assert call.worker is prepared
    await provider_hub.wait_for(flowing("audio"), within=WAIT)
    assert isinstance(failure, events.MediaFailed)
    # The call's status says so from its start (the failure was told before the call's phase).
    await patient_hub.wait_for(flowing("video"), within=WAIT)  # the provider's video reaches the kiosk
    assert call.status.status == "live" and call.status.lost_devices == ("video",)
    told = [e for e in patient_hub.items if isinstance(e, events.CallStatusChanged)]
    assert told and all(e.lost_devices == ("video",) for e in told)
