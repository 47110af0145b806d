"""sounddevice (PortAudio) access for the audio checks, with every failure turned into a reason.

Only blocking reads and writes: callback streams break under the service's
MemoryDenyWriteExecute. sounddevice is imported on first use because the
import itself probes every ALSA device.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Literal

import numpy as np

from devices.audio_analysis import Samples
from devices.sources import AudioDevice

Direction = Literal["input", "output"]
_CHUNK = 1024


class AudioDeviceError(Exception):
    """An audio device that cannot be used; ``reason`` is the human verdict."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def sounddevice() -> ModuleType:
    try:
        import sounddevice as sd
    except OSError as error:  # raised when libportaudio is missing
        raise AudioDeviceError(f"audio system unavailable: {error}") from error
    module: ModuleType = sd
    return module


@dataclass(frozen=True)
class ResolvedDevice:
    index: int
    name: str
    channels: int
    default_samplerate: float


def resolve(device: AudioDevice | None, direction: Direction) -> ResolvedDevice:
    """The PortAudio device for a name, an index or the system default."""
    sd = sounddevice()
    noun = "input" if direction == "input" else "output"
    try:
        if device is None:
            info: dict[str, Any] = sd.query_devices(kind=direction)
        elif isinstance(device, int):
            info = sd.query_devices(device)
        else:
            info = sd.query_devices(device, kind=direction)
    except sd.PortAudioError as error:
        if device is None:
            raise AudioDeviceError(f"no {noun} device") from error
        raise AudioDeviceError(f"no audio device with index {device}") from error
    except ValueError as error:
        if str(error).startswith("Multiple"):
            raise AudioDeviceError(f"{device!r} matches more than one {noun} device") from error
        raise AudioDeviceError(f"no {noun} device matching {device!r}") from error
    channels = int(info[f"max_{direction}_channels"])
    if channels < 1:
        raise AudioDeviceError(f"device {info['name']!r} has no {noun} channels")
    return ResolvedDevice(int(info["index"]), str(info["name"]), channels, float(info["default_samplerate"]))


def _open(device: ResolvedDevice, direction: Direction, samplerate: int) -> Any:
    """An int16 blocking stream, mono where the device allows it (some hardware only takes stereo)."""
    sd = sounddevice()
    factory = sd.InputStream if direction == "input" else sd.OutputStream
    noun = "microphone" if direction == "input" else "speaker"
    error: Exception | None = None
    for channels in dict.fromkeys((1, min(2, device.channels))):
        try:
            stream = factory(
                device=device.index, samplerate=samplerate, channels=channels, dtype="int16", latency="high"
            )
        except sd.PortAudioError as failure:
            error = failure
            continue
        try:
            stream.start()
        except sd.PortAudioError as failure:
            stream.close()
            error = failure
            continue
        return stream
    raise AudioDeviceError(f"{noun} cannot be opened: {_portaudio_text(error)}")


def record(
    device: ResolvedDevice, samplerate: int, frames: int, settle: int, deadline_s: float
) -> tuple[Samples, bool]:
    """Read ``settle`` frames and drop them, then ``frames`` more: a fixed count, never a duration,
    because a file-backed device has no real-time pacing."""
    sd = sounddevice()
    started = time.perf_counter()
    kept: list[Samples] = []
    overflowed = False
    remaining = settle + frames
    stream = _open(device, "input", samplerate)
    try:
        with stream:
            while remaining > 0:
                if time.perf_counter() - started > deadline_s:
                    raise AudioDeviceError(f"microphone too slow: no data within {deadline_s:g} s")
                count = min(_CHUNK * 4, remaining)
                data, overflow = stream.read(count)
                overflowed = overflowed or bool(overflow)
                kept.append(_mono(data))
                remaining -= count
    except sd.PortAudioError as error:
        raise AudioDeviceError(f"microphone stopped: {_portaudio_text(error)}") from error
    samples = np.concatenate(kept) if kept else np.zeros(0, np.int16)
    return samples[settle:], overflowed


def play(
    speaker: ResolvedDevice,
    monitor: ResolvedDevice | None,
    signal: Samples,
    samplerate: int,
    prime: int,
    deadline_s: float,
) -> Samples | None:
    """Play ``signal``; with a monitor, record the same number of frames while playing.

    Writes and reads alternate in equal chunks so both sides stay in step on
    real hardware and the order is fixed on unpaced file devices. ``prime``
    frames (the silent lead-in) are written before the first read so the
    listener never reads ahead of what was played.
    """
    sd = sounddevice()
    started = time.perf_counter()
    listened: list[Samples] = []
    try:
        listener = _open(monitor, "input", samplerate) if monitor is not None else None
        try:
            output = _open(speaker, "output", samplerate)
            with output:
                out_channels = int(output.channels)
                written = 0
                while written < signal.size:
                    if time.perf_counter() - started > deadline_s:
                        raise AudioDeviceError(f"speaker too slow: tone not played within {deadline_s:g} s")
                    chunk = signal[written : written + _CHUNK]
                    output.write(np.repeat(chunk[:, None], out_channels, axis=1))
                    written += chunk.size
                    if listener is not None and written > prime:
                        listened.append(_mono(listener.read(min(chunk.size, written - prime))[0]))
            if listener is not None:
                heard = sum(part.size for part in listened)
                while heard < signal.size:
                    count = min(_CHUNK, signal.size - heard)
                    listened.append(_mono(listener.read(count)[0]))
                    heard += count
        finally:
            if listener is not None:
                listener.close()
    except sd.PortAudioError as error:
        raise AudioDeviceError(f"speaker check stopped: {_portaudio_text(error)}") from error
    return np.concatenate(listened) if monitor is not None and listened else None


def _mono(data: Any) -> Samples:
    return np.ascontiguousarray(np.asarray(data, dtype=np.int16)[:, 0])


def _portaudio_text(error: Exception | None) -> str:
    """PortAudio's message without the host API's error-code suffix."""
    if error is None:
        return "unknown error"
    text = str(error.args[0]) if error.args else str(error)
    return text.split(" [PaErrorCode")[0]
