"""The quality level at its boundaries, the loss-based bitrate ceiling, stats to samples (jitter
in ms from RTP clock units), key frames told apart, and the key-frame gate's decisions."""

from __future__ import annotations

import fractions
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from aiortc.codecs.vpx import Vp8Encoder, vp8_depayload
from av import VideoFrame

from telehealth_client.media.call import KeyframeGate, is_key_frame
from telehealth_client.media.quality import BitrateCeiling, StatsMeter, quality_level


def level(**overrides: Any) -> int:
    values: dict[str, Any] = {
        "packets": 100,
        "loss_pct": 0.0,
        "rtt_ms": 20.0,
        "jitter_ms": 5.0,
        "fps": 30.0,
        "video_expected": True,
    }
    return quality_level(**(values | overrides))


def test_good_conditions_are_five_and_nothing_arriving_is_zero() -> None:
    assert level() == 5
    assert level(packets=0) == 0
    assert level(packets=1) == 5


@pytest.mark.parametrize(
    ("loss", "expected"),
    [(0.99, 5), (1.0, 4), (1.99, 4), (2.0, 3), (4.99, 3), (5.0, 2), (9.99, 2), (10.0, 1), (100.0, 1)],
)
def test_loss_bands(loss: float, expected: int) -> None:
    assert level(loss_pct=loss) == expected


@pytest.mark.parametrize(
    ("rtt", "expected"),
    [(149.9, 5), (150.0, 4), (299.9, 4), (300.0, 3), (499.9, 3), (500.0, 2), (999.9, 2), (1000.0, 1)],
)
def test_round_trip_bands(rtt: float, expected: int) -> None:
    assert level(rtt_ms=rtt) == expected


@pytest.mark.parametrize(
    ("jitter", "expected"),
    [(29.9, 5), (30.0, 4), (49.9, 4), (50.0, 3), (99.9, 3), (100.0, 2), (199.9, 2), (200.0, 1)],
)
def test_jitter_bands(jitter: float, expected: int) -> None:
    assert level(jitter_ms=jitter) == expected


@pytest.mark.parametrize(
    ("fps", "expected"),
    [(24.0, 5), (23.9, 4), (15.0, 4), (14.9, 3), (10.0, 3), (9.9, 2), (5.0, 2), (4.9, 1), (0.0, 1)],
)
def test_frame_rate_floors_count_only_when_video_is_expected(fps: float, expected: int) -> None:
    assert level(fps=fps) == expected
    assert level(fps=fps, video_expected=False) == 5


def test_unknown_round_trip_and_jitter_do_not_count_and_the_worst_metric_wins() -> None:
    assert level(rtt_ms=None, jitter_ms=None) == 5
    assert level(loss_pct=3.0, rtt_ms=600.0, jitter_ms=40.0) == 2  # the RTT, the worst of them


def test_sustained_loss_lowers_the_ceiling_and_clean_seconds_raise_it_within_the_range() -> None:
    ceiling = BitrateCeiling(250_000, 1_500_000)
    assert ceiling.update(8.0) == 1_500_000  # one lossy second is not sustained
    assert ceiling.update(8.0) == 1_200_000
    assert ceiling.update(8.0) == 960_000
    assert ceiling.update(None) == 960_000  # no report: no decision
    assert ceiling.update(3.0) == 960_000  # between clean and lossy: holds, and breaks the run
    assert ceiling.update(8.0) == 960_000
    for _ in range(20):
        ceiling.update(50.0)
    assert ceiling.ceiling == 250_000  # never under the codec's minimum
    for _ in range(4):
        assert ceiling.update(0.0) == 250_000
    assert ceiling.update(0.5) == 275_000  # the fifth clean second in a row raises it
    for _ in range(200):
        ceiling.update(0.0)
    assert ceiling.ceiling == 1_500_000  # never over the codec's maximum


def test_a_bitrate_range_that_cannot_be_is_refused() -> None:
    with pytest.raises(ValueError, match="minimum <= maximum"):
        BitrateCeiling(2, 1)
    with pytest.raises(ValueError, match="0 < minimum"):
        BitrateCeiling(0, 1)


@dataclass
class Stat:
    type: str
    kind: str = "video"
    ssrc: int = 1
    packetsReceived: int = 0  # aiortc's names
    packetsLost: int = 0
    jitter: int = 0
    roundTripTime: float | None = None
    fractionLost: int = 0
    bytesReceived: int = 0
    bytesSent: int = 0
    timestamp: float = 0.0  # when the far end's report came (remote-inbound)


def test_stats_become_a_sample_per_interval_with_jitter_in_milliseconds() -> None:
    meter = StatsMeter()
    first = [Stat("inbound-rtp", packetsReceived=100), Stat("transport")]
    assert meter.sample(first, now=10.0, video_frames=0, size=None, ceiling=None) is None
    second = [
        Stat("inbound-rtp", "video", 1, packetsReceived=180, packetsLost=10, jitter=900),
        Stat("inbound-rtp", "audio", 2, packetsReceived=110, jitter=96),
        Stat("remote-inbound-rtp", "video", roundTripTime=0.12, fractionLost=64),
        Stat("remote-inbound-rtp", "audio", roundTripTime=0.08),
        Stat("transport", bytesReceived=125_000, bytesSent=250_000),
    ]
    sample = meter.sample(second, now=12.0, video_frames=50, size=(640, 480), ceiling=1_200_000)
    assert sample is not None
    # 80 packets and 10 lost on video, and audio's first 110 (a stream new since the last sample).
    assert sample.loss_pct == 5.0
    assert sample.jitter_ms == 10.0  # 900 at 90 kHz (audio: 96 at 48 kHz is 2 ms)
    assert sample.rtt_ms == 120.0
    assert sample.sent_loss_pct == 25.0  # RTCP's 64/256
    assert (sample.fps, sample.width, sample.height) == (25.0, 640, 480)
    assert (sample.inbound_kbps, sample.outbound_kbps) == (500.0, 1000.0)
    assert sample.video_kbps_ceiling == 1200
    assert sample.level == 2  # 5 % loss


def test_a_second_with_no_packets_is_level_zero() -> None:
    meter = StatsMeter()
    stats = [Stat("inbound-rtp", packetsReceived=100), Stat("transport")]
    meter.sample(stats, now=0.0, video_frames=30, size=(640, 480), ceiling=None)
    sample = meter.sample(stats, now=1.0, video_frames=30, size=(640, 480), ceiling=None)
    assert sample is not None and (sample.level, sample.fps, sample.video_kbps_ceiling) == (0, 0.0, None)


def test_a_stream_that_stopped_no_longer_counts_its_last_jitter_round_trip_or_loss() -> None:
    """Paused video (the audio-only fallback): its receive stats keep their last jitter and the far
    end's last report about it keeps its round trip and loss; none of that is about now."""
    meter = StatsMeter()

    def second(at: float, video_packets: int, report_at: float) -> list[Stat]:
        return [
            Stat("inbound-rtp", "video", 1, packetsReceived=video_packets, jitter=18_000),  # 200 ms
            Stat("inbound-rtp", "audio", 2, packetsReceived=int(at * 50), jitter=96),
            Stat("remote-inbound-rtp", "video", 3, roundTripTime=0.9, fractionLost=64, timestamp=report_at),
            Stat("transport"),
        ]

    meter.sample(second(1.0, 100, 1.0), now=1.0, video_frames=0, size=None, ceiling=None)
    lossy = meter.sample(second(2.0, 200, 2.0), now=2.0, video_frames=0, size=None, ceiling=None)
    assert lossy is not None and (lossy.jitter_ms, lossy.rtt_ms, lossy.sent_loss_pct) == (200.0, 900.0, 25.0)
    # The video stops: no more video packets, no new report about ours.
    quiet = meter.sample(second(3.0, 200, 2.0), now=3.0, video_frames=0, size=None, ceiling=None)
    assert quiet is not None and quiet.jitter_ms == 2.0  # audio's own
    assert quiet.rtt_ms == 900.0  # a report a second old still stands
    for at in (4.0, 5.0, 6.0, 7.0, 8.0):
        later = meter.sample(second(at, 200, 2.0), now=at, video_frames=0, size=None, ceiling=None)
    assert later is not None and (later.rtt_ms, later.sent_loss_pct) == (None, None)
    assert later.level == 5  # audio alone, clean


def encoded_frames(count: int, keyframes: set[int]) -> list[bytes]:
    encoder = Vp8Encoder()
    frames = []
    for index in range(count):
        image = np.full((120, 160, 3), index * 10 % 256, np.uint8)
        frame = VideoFrame.from_ndarray(image, format="bgr24")
        frame.pts, frame.time_base = index * 3000, fractions.Fraction(1, 90000)
        payloads, _ = encoder.encode(frame, force_keyframe=index in keyframes)
        frames.append(b"".join(vp8_depayload(payload) for payload in payloads))
    return frames


def test_vp8_and_h264_key_frames_are_told_from_the_others() -> None:
    frames = encoded_frames(4, keyframes={2})
    assert [is_key_frame(data) for data in frames] == [True, False, True, False]
    assert not is_key_frame(b"") and not is_key_frame(frames[0][:5])
    sps, idr, non_idr = b"\x00\x00\x00\x01\x67\x42", b"\x00\x00\x01\x65\x88", b"\x00\x00\x00\x01\x41\x9a"
    assert is_key_frame(sps + idr) and not is_key_frame(non_idr) and not is_key_frame(sps)


@dataclass
class Encoded:
    data: bytes


class Buffer:
    """Stands in for aiortc's jitter buffer: hands back what the test scripted per packet."""

    def __init__(self, script: list[tuple[bool, Encoded | None]]) -> None:
        self.script = script

    def add(self, packet: object) -> tuple[bool, Encoded | None]:
        return self.script.pop(0)


def test_the_gate_drops_frames_until_a_key_frame_after_the_start_and_after_a_skip() -> None:
    key, delta, _, _ = (Encoded(data) for data in encoded_frames(4, keyframes=set()))
    buffer = Buffer(
        [
            (False, delta),  # the stream joined mid-way: no reference yet
            (False, key),
            (False, delta),
            (True, delta),  # the buffer skipped packets: this one's references are gone
            (False, delta),
            (False, key),
            (False, delta),
        ]
    )
    gate = KeyframeGate(buffer.add, pli_every=3600.0)
    decisions = [gate(Packet(index * 3000)) for index in range(7)]
    assert [frame is not None for _, frame in decisions] == [False, True, True, False, False, True, True]
    # A PLI at the first packet and at the skip; not again within pli_every.
    assert [pli for pli, _ in decisions] == [True, False, False, True, False, False, False]
    assert gate.dropped == 3 and not gate.waiting


def test_the_gate_asks_again_for_a_key_frame_while_it_waits() -> None:
    delta = Encoded(encoded_frames(2, keyframes=set())[1])
    gate = KeyframeGate(Buffer([(False, delta)] * 3).add, pli_every=0.0)
    assert [gate(Packet(index * 3000))[0] for index in range(3)] == [True, True, True]


@dataclass
class Packet:
    timestamp: int  # RTP, 90 kHz


def test_the_gate_takes_packets_far_later_than_their_timestamps_for_a_backlog() -> None:
    """A relay frozen for 10 s releases what it held: frames 33 ms apart in media time, arriving
    10 s late. Clean but stale: the gate waits for the key frame it asks for then. A live stream at
    one frame a second is on time (its timestamps advance as it arrives)."""
    key, delta, _, _ = (Encoded(data) for data in encoded_frames(4, keyframes=set()))
    now = [0.0]
    buffer = Buffer(
        [(False, key), (False, delta), (False, delta), (False, delta), (False, key), (False, delta)]
    )
    gate = KeyframeGate(buffer.add, pli_every=3600.0, clock=lambda: now[0])
    shown = []
    for at, timestamp in (
        (0.0, 0),
        (0.033, 3000),
        (10.1, 6000),
        (10.11, 9000),
        (10.2, 900_000),
        (10.23, 903_000),
    ):
        now[0] = at
        pli, frame = gate(Packet(timestamp))
        shown.append((frame is not None, pli))
    # The first frame after the freeze arrives 10 s after the one before, 33 ms later in media
    # time: a PLI, and the backlog's frames dropped until the key frame made after it.
    assert shown == [
        (True, False),
        (True, False),
        (False, True),
        (False, False),
        (True, False),
        (True, False),
    ]
    slow = KeyframeGate(
        Buffer([(False, key), (False, delta), (False, delta)]).add, pli_every=3600.0, clock=lambda: now[0]
    )
    decided = []
    for at, timestamp in ((0.0, 0), (1.0, 90_000), (2.01, 180_000)):
        now[0] = at
        decided.append(slow(Packet(timestamp))[1] is not None)
    assert decided == [True, True, True]
