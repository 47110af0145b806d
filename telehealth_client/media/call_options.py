"""What a call is given: the devices its media child opens and the options of the call.

Plain data, apart from the call's code: the agent builds them from its settings at start
(media/options.py), long before a call, and must not load the call's modules to do so (they load
only when a call is built: tests/unit/test_media_imports.py).

Public API: ``Devices(camera=None, camera_is_file=False, microphone=None, speaker=None,
relay_only=True)``; ``MediaOptions(devices, env=None, fallback=..., memory_ceiling_mb=None,
outbound=...)``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from telehealth_client.media.fallback import FallbackSettings
from telehealth_client.outbound import Outbound


@dataclass(frozen=True)
class Devices:
    """What the child opens: the camera source (or None), whether it is a file (a test pattern,
    paced and looped), the microphone and speaker device (name or index, or None for none)."""

    camera: str | None = None
    camera_is_file: bool = False
    microphone: str | None = None
    speaker: str | None = None
    relay_only: bool = True


@dataclass(frozen=True)
class MediaOptions:
    """The devices the media child opens, its environment (e.g. ``ALSA_CONFIG_PATH``), and when
    the patient side's call falls back to audio only."""

    devices: Devices
    env: Mapping[str, str] | None = None
    fallback: FallbackSettings = field(default_factory=FallbackSettings)  # when to go audio only
    memory_ceiling_mb: float | None = None  # a child grown over this is replaced between connections
    outbound: Outbound = field(default_factory=Outbound)  # how TURN is reached (proxy, CA bundle)
