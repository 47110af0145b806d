"""The media child's devices, from the agent's settings (without loading OpenCV or PortAudio).

The camera is the device check's source setting, or the first ``/dev/videoN`` there is (none: the
call is one-way, receiving only); a source that is neither a device, an index nor a URL is a video
file, played at its frame rate and looped (a test pattern). Microphone and speaker are the
settings' names, or ALSA's ``default``: a device that cannot be opened is reported when the call
starts and the call goes on without it.

The way to TURN (the HTTPS proxy, the CA bundle) goes with them: the child's connections to TURN
use it (``TurnConfig.outbound``).

Public API: ``media_options(settings) -> MediaOptions | None`` (None when ``media`` is off).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from telehealth_client.media.call_options import Devices, MediaOptions
from telehealth_client.outbound import Outbound

if TYPE_CHECKING:
    from telehealth_client.config import Settings

DEFAULT_AUDIO_DEVICE = "default"


def first_camera(dev: Path = Path("/dev")) -> str | None:
    """The lowest-numbered ``videoN`` device, or None."""
    numbered = [path for path in dev.glob("video*") if path.name[len("video") :].isdigit()]
    cameras = sorted(numbered, key=lambda path: int(path.name[len("video") :]))
    return str(cameras[0]) if cameras else None


def is_file_source(source: str) -> bool:
    return not (source.startswith("/dev/") or source.strip().isdigit() or "://" in source)


def media_options(settings: Settings) -> MediaOptions | None:
    if not settings.media:
        return None
    camera = settings.camera or first_camera()
    devices = Devices(
        camera=camera,
        camera_is_file=camera is not None and is_file_source(camera),
        microphone=settings.microphone or DEFAULT_AUDIO_DEVICE,
        speaker=settings.speaker or DEFAULT_AUDIO_DEVICE,
        relay_only=settings.relay_only,
    )
    return MediaOptions(
        devices,
        memory_ceiling_mb=settings.media_memory_ceiling_mb,
        outbound=Outbound.from_settings(settings),  # TURN over TCP/TLS: the proxy, the CA bundle
    )
