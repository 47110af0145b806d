"""When a call's video cannot be sustained: audio alone, and back to video once the path is good.

The patient side decides for the call (it is the one that tells the far end, ``DEVICE_STATUS``
``network``), one decision per quality sample. Video cannot be sustained when the network is poor
(loss, round trip or jitter at ``poor_level`` or worse) for ``poor_samples`` samples in a row
while the video encoder already sends as little as it can (its loss-based ceiling at the codec's
minimum, or no adaptation at all): lowering the bitrate has not helped, and the video's packets
take the audio's share of a bad path. Audio alone comes back to video after ``good_samples``
samples in a row at ``good_level`` or better. The frame rate is not a network measure (a slow
camera at the far end is no reason to stop our video) and is left out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

from telehealth_client.media.quality import JITTER_BANDS, LOSS_BANDS, RTT_BANDS, QualitySample, band

VideoMode = Literal["video", "audio-only"]

POOR_LEVEL: Final = 2
GOOD_LEVEL: Final = 4
POOR_SAMPLES: Final = 8
GOOD_SAMPLES: Final = 20


def network_level(sample: QualitySample) -> int:
    """The sample's level from the path alone (loss, round trip, jitter): 0 when nothing arrived."""
    if sample.level == 0:
        return 0
    levels = [band(sample.loss_pct, LOSS_BANDS)]
    if sample.sent_loss_pct is not None:
        levels.append(band(sample.sent_loss_pct, LOSS_BANDS))
    if sample.rtt_ms is not None:
        levels.append(band(sample.rtt_ms, RTT_BANDS))
    if sample.jitter_ms is not None:
        levels.append(band(sample.jitter_ms, JITTER_BANDS))
    return min(levels)


@dataclass(frozen=True)
class FallbackSettings:
    """When the call falls back to audio only and returns to video (see the module's docstring)."""

    poor_level: int = POOR_LEVEL
    good_level: int = GOOD_LEVEL
    poor_samples: int = POOR_SAMPLES
    good_samples: int = GOOD_SAMPLES

    def __post_init__(self) -> None:
        if not 0 < self.poor_level < self.good_level <= 5:
            raise ValueError(f"levels: need 0 < poor < good <= 5, got {self.poor_level}, {self.good_level}")
        if self.poor_samples < 1 or self.good_samples < 1:
            raise ValueError("samples: need at least 1 of each")


class VideoFallback:
    """Feed it every sample (``observe``); it returns the new mode when the mode changes."""

    def __init__(self, settings: FallbackSettings | None = None) -> None:
        self.settings = settings or FallbackSettings()
        self.mode: VideoMode = "video"
        self._run = 0

    def observe(self, sample: QualitySample, *, bitrate_at_floor: bool) -> VideoMode | None:
        level = network_level(sample)
        if level == 0:
            self._run = 0  # nothing arrived: a stall, which a rebuild handles, not this
            return None
        settings = self.settings
        then: VideoMode
        if self.mode == "video":
            counts = level <= settings.poor_level and bitrate_at_floor
            needed, then = settings.poor_samples, "audio-only"
        else:
            counts = level >= settings.good_level
            needed, then = settings.good_samples, "video"
        self._run = self._run + 1 if counts else 0
        if self._run < needed:
            return None
        self._run = 0
        self.mode = then
        return self.mode
