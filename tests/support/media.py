"""The media tests' helpers: TURN credentials for their coturn, ALSA file devices and numbered
video for a media child, a call under way between two endpoints, what a child reported
(``Events``) or received (``Receiver``), and the frame numbers read back."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
from av import VideoFrame

from devices import synthetic
from telehealth_client import events
from telehealth_client.consultation.patient import PatientEndpoint
from telehealth_client.consultation.provider import ProviderEndpoint
from telehealth_client.media.call import TurnConfig
from telehealth_client.media.child_messages import ChildEvent
from telehealth_client.media.consultation_call import ConsultationCall, MediaOptions
from telehealth_client.media.worker import Devices
from telehealth_client.protocol.messages import ConsultationState as S
from telehealth_devstack.turn import TurnServer, turn_rest_credentials
from tests.integration.media.numbered import block_centres, read, write_numbered_video
from tests.support.consultation import (
    APPOINTMENT,
    CONSULTATION,
    DEPARTMENT,
    PATIENT,
    PROVIDER,
    Parts,
    RecordingHub,
)
from tests.support.recorder import Recorder

CALL_WAIT = 30.0  # seconds; the bound on a step of a call between two media children


def turn_config(
    turn: TurnServer, user_id: str = "pat-1", *, expired: bool = False, tls: bool = False
) -> TurnConfig:
    """Credentials for ``turn``; with ``tls`` its ``turns:`` URL only, as a clinic on 443 hands out."""
    now = time.time() - 3600 if expired else None
    username, credential = turn_rest_credentials(turn.secret, user_id, 600, now=now)
    return TurnConfig(tuple(turn.tls_urls if tls else turn.urls), username, credential)


def child_env(tmp_path: Path, name: str) -> tuple[dict[str, str], Devices]:
    """ALSA file devices for one child: a tone as its microphone, a speaker writing to a file."""
    tone = synthetic.write_pcm(tmp_path / f"{name}-tone.raw", "tone", seconds=30.0)
    alsa = synthetic.write_alsa_config(tmp_path / f"{name}-alsa", tone, loopback=False)
    first = 1 if name == "patient" else 1000
    video = write_numbered_video(tmp_path / f"{name}.mkv", frames=60, first=first)
    env = {**os.environ, **alsa.env}
    devices = Devices(
        camera=str(video), camera_is_file=True, microphone=alsa.microphone, speaker=alsa.speaker
    )
    return env, devices


def devices_environment(tmp_path: Path, name: str) -> dict[str, str]:
    """The settings an agent's media child reads: a numbered video as the camera, a tone as the
    microphone and a speaker writing to a file (ALSA file devices)."""
    video = write_numbered_video(tmp_path / f"{name}.mkv", frames=60, first=1 if name == "patient" else 1000)
    tone = synthetic.write_pcm(tmp_path / f"{name}-tone.raw", "tone", seconds=30.0)
    alsa = synthetic.write_alsa_config(tmp_path / f"{name}-alsa", tone, loopback=False)
    assert alsa.microphone is not None and alsa.speaker is not None
    return {
        "TELEHEALTH_CAMERA": str(video),
        "TELEHEALTH_MICROPHONE": alsa.microphone,
        "TELEHEALTH_SPEAKER": alsa.speaker,
        **alsa.env,
    }


@dataclasses.dataclass(frozen=True)
class SharedAlsa:
    """One ALSA configuration for the media children of several agents in this process (they all
    inherit its environment, ``ALSA_CONFIG_PATH``): ``settings[name]`` each agent's camera (a numbered
    video), microphone (a tone) and speaker, its devices named after it; ``played[name]`` what the
    speaker of a heard agent played (s16 mono at 48 kHz, as the media child's playback writes it)."""

    config: Path
    settings: dict[str, dict[str, str]]
    played: dict[str, Path]


def shared_alsa(tmp_path: Path, names: tuple[str, ...], heard: tuple[str, ...] = ()) -> SharedAlsa:
    """Each agent's devices as ``devices_environment`` makes them, their ALSA configurations merged
    into one, each device renamed after its agent."""
    lines = ["pcm.null { type null }"]
    settings: dict[str, dict[str, str]] = {}
    played: dict[str, Path] = {}
    for name in names:
        first = 1 if name == "patient" else 1000
        video = write_numbered_video(tmp_path / f"{name}.mkv", frames=60, first=first)
        tone = synthetic.write_pcm(tmp_path / f"{name}-tone.raw", "tone", seconds=30.0)
        alsa = synthetic.write_alsa_config(tmp_path / f"{name}-alsa", tone, loopback=name in heard)
        assert alsa.microphone is not None and alsa.speaker is not None
        renamed = {
            device: f"{name}_{device}" for device in (alsa.microphone, alsa.speaker, alsa.monitor) if device
        }
        for line in alsa.config.read_text().splitlines():
            if line.startswith("pcm.null ") or line.startswith("pcm.default "):
                continue
            for device, own in renamed.items():
                line = line.replace(f"pcm.{device} ", f"pcm.{own} ")
            lines.append(line)
        settings[name] = {
            "TELEHEALTH_CAMERA": str(video),
            "TELEHEALTH_MICROPHONE": renamed[alsa.microphone],
            "TELEHEALTH_SPEAKER": renamed[alsa.speaker],
        }
        if alsa.played is not None:
            played[name] = alsa.played
    # PortAudio aborts on a configuration without a ``default`` device: the first agent's.
    first_settings = settings[names[0]]
    lines.append(
        f'pcm.default {{ type asym; playback.pcm "{first_settings["TELEHEALTH_SPEAKER"]}"; '
        f'capture.pcm "{first_settings["TELEHEALTH_MICROPHONE"]}" }}'
    )
    config = tmp_path / "asound.conf"
    config.write_text("\n".join(lines) + "\n")
    return SharedAlsa(config, settings, played)


PLAYED_WINDOW_BYTES = 48_000 // 10 * 2  # 0.1 s of s16 mono at 48 kHz


class PlayedAudio(asyncio.Protocol):
    """What a speaker plays, as it plays it: its file (``SharedAlsa.played``) made a FIFO that this reads
    on the event loop, each 0.1 s window's RMS level (of int16 full scale) recorded in ``levels``.
    It holds a writer end of its own, so the media child that replaces a crashed one opens the
    same FIFO and the reading never ends between them. ``await open(path)``; ``await heard(test,
    within)``: the first level from now on for which ``test(level)`` holds; ``await
    next_levels(count)``; ``close()``."""

    def __init__(self) -> None:
        self.levels = Recorder()
        self._buffer = b""
        self._transport: asyncio.ReadTransport | None = None
        self._writer = -1

    @classmethod
    async def open(cls, path: Path) -> PlayedAudio:
        await asyncio.to_thread(path.unlink, missing_ok=True)
        os.mkfifo(path, 0o600)
        played = cls()
        reader = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # before any writer: it would block
        played._writer = os.open(path, os.O_WRONLY)
        pipe = os.fdopen(reader, "rb", buffering=0)
        played._transport, _ = await asyncio.get_running_loop().connect_read_pipe(lambda: played, pipe)
        return played

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        while len(self._buffer) >= PLAYED_WINDOW_BYTES:
            window, self._buffer = self._buffer[:PLAYED_WINDOW_BYTES], self._buffer[PLAYED_WINDOW_BYTES:]
            samples = np.frombuffer(window, dtype="<i2").astype(np.float64)
            self.levels.add(float(np.sqrt(np.mean(samples**2))))

    async def heard(self, test: Any, within: float = 10.0) -> float:
        start = len(self.levels.items)
        await self.levels.until(lambda: any(test(level) for level in self.levels.items[start:]), within)
        return next(level for level in self.levels.items[start:] if test(level))

    async def next_levels(self, count: int, within: float = 10.0) -> list[float]:
        """The next ``count`` levels from now on (``count`` tenths of a second played)."""
        start = len(self.levels.items)
        await self.levels.until(lambda: len(self.levels.items) >= start + count, within)
        return list(self.levels.items[start : start + count])

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
        if self._writer >= 0:
            os.close(self._writer)
            self._writer = -1


def media_options(tmp_path: Path, name: str) -> MediaOptions:
    env, devices = child_env(tmp_path, name)
    return MediaOptions(devices, env)


def flowing(kind: str) -> object:
    return lambda e: isinstance(e, events.MediaFlowing) and e.media == kind


@dataclasses.dataclass
class UnderWay:
    patient: PatientEndpoint
    provider: ProviderEndpoint
    patient_hub: RecordingHub
    provider_hub: RecordingHub
    provider_call: ConsultationCall


async def connecting(
    parts: Parts, tmp_path: Path, patient_media: MediaOptions | None = None
) -> tuple[PatientEndpoint, ProviderEndpoint, RecordingHub, RecordingHub]:
    """A kiosk checked in (with ``patient_media``, or a camera and microphone) and its provider
    joined: the consultation is connecting, nobody has called yet."""
    patient_hub, provider_hub = RecordingHub(), RecordingHub()
    provider = await parts.provider(provider_hub, media=media_options(tmp_path, "provider"))
    await parts.record_consent()
    patient = parts.patient(patient_hub, media=patient_media or media_options(tmp_path, "patient"))
    await patient.check_in(
        appointment_id=APPOINTMENT, patient_id=PATIENT, provider_id=PROVIDER, department_id=DEPARTMENT
    )
    await provider_hub.wait_state(S.CHECKED_IN)
    await provider.join(CONSULTATION)
    await patient_hub.wait_state(S.CONNECTING)
    return patient, provider, patient_hub, provider_hub


async def call_under_way(parts: Parts, tmp_path: Path) -> UnderWay:
    """A kiosk checked in, its provider joined and called: video flowing both ways."""
    patient, provider, patient_hub, provider_hub = await connecting(parts, tmp_path)
    provider_call = await provider.call(CONSULTATION)
    for hub in (patient_hub, provider_hub):
        await hub.wait_for(flowing("video"), within=CALL_WAIT)
    return UnderWay(patient, provider, patient_hub, provider_hub, provider_call)


WAIT = 20.0


class Receiver:
    """The numbers read from remote video frames, and how many audio frames came."""

    def __init__(self, enough: int) -> None:
        self.numbers: list[int] = []
        self.audio = 0
        self._enough = enough
        self.done = asyncio.Event()

    def __call__(self, kind: str, frame: object) -> None:
        if kind == "video":
            assert isinstance(frame, VideoFrame)
            self.numbers.append(read(frame))
        else:
            self.audio += 1
        if len(self.numbers) >= self._enough and self.audio >= self._enough:
            self.done.set()


def only_relay(sdp: str) -> bool:
    candidates = [line for line in sdp.splitlines() if line.startswith("a=candidate:")]
    return bool(candidates) and all(" typ relay" in line for line in candidates)


class Events:
    """The child's events (typed, media/child_messages.py), kept as their wire fields."""

    def __init__(self) -> None:
        self._recorder = Recorder()
        self.items: list[dict[str, Any]] = self._recorder.items

    def __call__(self, event: ChildEvent) -> None:
        self._recorder.add(event.model_dump())

    async def wait(self, **fields: Any) -> dict[str, Any]:
        found = await self._recorder.wait_for(
            lambda item: all(item.get(k) == v for k, v in fields.items()), within=CALL_WAIT
        )
        return found[0]  # type: ignore[no-any-return]


def strict_read(frame: VideoFrame) -> int:
    """The drawn number, or UNREADABLE when any block is not clearly black or white (a frame
    decoded against missing references smears blocks into grey)."""
    number = 0
    for bit, centre in enumerate(block_centres(frame)):
        if 60.0 < centre < 196.0:
            return UNREADABLE
        if centre >= 196.0:
            number |= 1 << bit
    return number


UNREADABLE = -1
