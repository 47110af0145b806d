"""The audio-only fallback's decision (media/fallback.py): poor path with the bitrate at its floor
for a run of samples gives audio only; a run of good samples gives video back; a stall, a slow
camera or a poor path the encoder can still adapt to changes nothing."""

from __future__ import annotations

import pytest

from telehealth_client.media.fallback import FallbackSettings, VideoFallback, network_level
from telehealth_client.media.quality import QualitySample


def sample(
    *,
    level: int = 5,
    loss: float = 0.0,
    sent_loss: float | None = None,
    rtt: float | None = 40.0,
    jitter: float | None = 5.0,
    fps: float = 30.0,
) -> QualitySample:
    return QualitySample(
        level=level,
        rtt_ms=rtt,
        jitter_ms=jitter,
        loss_pct=loss,
        sent_loss_pct=sent_loss,
        fps=fps,
        width=640,
        height=480,
        inbound_kbps=600.0,
        outbound_kbps=600.0,
        video_kbps_ceiling=None,
    )


LOSSY = sample(level=2, loss=12.0)
GOOD = sample()


def test_the_network_level_leaves_the_frame_rate_out() -> None:
    assert network_level(sample(level=1, fps=2.0)) == 5
    assert network_level(sample(level=2, loss=12.0)) == 1
    assert network_level(sample(level=3, sent_loss=6.0)) == 2  # our video lost on the way
    assert network_level(sample(level=3, rtt=700.0)) == 2
    assert network_level(sample(level=0)) == 0


def test_a_poor_path_at_the_bitrate_floor_falls_back_to_audio_then_recovers() -> None:
    fallback = VideoFallback(FallbackSettings(poor_samples=3, good_samples=4))
    assert [fallback.observe(LOSSY, bitrate_at_floor=True) for _ in range(3)] == [None, None, "audio-only"]
    assert fallback.mode == "audio-only"
    assert [fallback.observe(GOOD, bitrate_at_floor=True) for _ in range(4)] == [None, None, None, "video"]
    assert fallback.mode == "video"


def test_a_poor_path_the_encoder_can_still_adapt_to_keeps_video() -> None:
    fallback = VideoFallback(FallbackSettings(poor_samples=3, good_samples=4))
    assert all(fallback.observe(LOSSY, bitrate_at_floor=False) is None for _ in range(10))
    assert fallback.mode == "video"


def test_a_run_must_be_unbroken() -> None:
    fallback = VideoFallback(FallbackSettings(poor_samples=3, good_samples=3))
    for _ in range(5):
        assert fallback.observe(LOSSY, bitrate_at_floor=True) is None
        assert fallback.observe(LOSSY, bitrate_at_floor=True) is None
        assert fallback.observe(GOOD, bitrate_at_floor=True) is None
    for _ in range(2):
        fallback.observe(LOSSY, bitrate_at_floor=True)
    assert fallback.observe(sample(level=0), bitrate_at_floor=True) is None  # a stall resets the run
    assert fallback.observe(LOSSY, bitrate_at_floor=True) is None
    assert fallback.mode == "video"


def test_audio_only_holds_while_the_path_stays_middling() -> None:
    fallback = VideoFallback(FallbackSettings(poor_samples=1, good_samples=2))
    assert fallback.observe(LOSSY, bitrate_at_floor=True) == "audio-only"
    middling = sample(level=3, loss=3.0)  # level 3: not poor, not good
    assert all(fallback.observe(middling, bitrate_at_floor=True) is None for _ in range(10))
    assert fallback.mode == "audio-only"


def test_a_slow_far_camera_is_no_reason_to_stop_video() -> None:
    fallback = VideoFallback(FallbackSettings(poor_samples=2, good_samples=2))
    slow = sample(level=1, fps=3.0)
    assert all(fallback.observe(slow, bitrate_at_floor=True) is None for _ in range(10))


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"poor_level": 4, "good_level": 3}, "levels"),
        ({"poor_level": 0}, "levels"),
        ({"good_level": 6}, "levels"),
        ({"poor_samples": 0}, "samples"),
        ({"good_samples": 0}, "samples"),
    ],
)
def test_bad_settings_are_refused_naming_them(fields: dict[str, int], field: str) -> None:
    with pytest.raises(ValueError, match=field):
        FallbackSettings(**fields)


def test_the_protocol_doc_gives_the_fallbacks_own_numbers() -> None:
    from pathlib import Path

    from telehealth_client.media.call import QUALITY_SECONDS
    from telehealth_client.media.fallback import GOOD_SAMPLES, POOR_SAMPLES

    doc = " ".join((Path(__file__).resolve().parents[2] / "docs" / "protocol.md").read_text().split())
    assert f"poor for {POOR_SAMPLES * QUALITY_SECONDS:.0f} s in a row" in doc
    assert f"after {GOOD_SAMPLES * QUALITY_SECONDS:.0f} s of a good path" in doc
