"""Call quality: aiortc's stats plus our own frame counts to a 0-5 level, and bitrate adaptation.

Every second the call samples ``getStats()`` (packets, loss, jitter in RTP clock units, the far
end's receiver reports with round-trip time and the fraction of our packets it lost, transport
bytes) and its own count of decoded frames (aiortc has no fps or frame size). ``quality_level``
turns a sample into 0 (nothing arrives) to 5 (as good as it gets): the worst of its metrics, so
the level names what hurts. Thresholds match the preflight's: jitter under 30 ms and loss under
1 % are good, loss from 5 % or RTT from 300 ms are poor.

aiortc sets the VP8 encoder's target bitrate only from the far end's REMB estimate and never
lowers it for loss. ``BitrateCeiling`` decides, from the loss the far end reports, a ceiling the
encoder's target may not exceed: sustained loss lowers it, a run of clean seconds raises it again,
always within the codec's range.

The only code in the project that touches aiortc's private attributes is the "aiortc internals"
section at the end, pinned to ``PINNED_AIORTC``; tests/unit/test_quality_internals.py breaks when
aiortc changes version or moves them. With any other aiortc the call works without adaptation and
without the key-frame gate (a warning says so once).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Final

log = logging.getLogger(__name__)

# RTP clock rates: aiortc reports jitter in these units, not in time.
VIDEO_CLOCK_KHZ: Final = 90.0
AUDIO_CLOCK_KHZ: Final = 48.0


@dataclass(frozen=True)
class QualitySample:
    """One second of a call, as measured at this end. ``None``: not known yet."""

    level: int
    rtt_ms: float | None
    jitter_ms: float | None
    loss_pct: float  # of the packets that should have reached us this second
    sent_loss_pct: float | None  # of our video packets, as the far end last reported
    fps: float  # remote video frames decoded this second
    width: int | None
    height: int | None
    inbound_kbps: float
    outbound_kbps: float
    video_kbps_ceiling: int | None  # the encoder's loss-based ceiling; None when not adapting


# A receiver report about one of our streams counts this long after it came (they come every
# 0.5-1.5 s while the stream is sent); an older one is about a stream we no longer send (paused
# video), and its round trip and loss would stand for ever.
REPORT_FRESH_SECONDS: Final = 5.0

# Bands per metric: (limit, level) in order; the first limit the value is under gives the level.
LOSS_BANDS: Final = ((1.0, 5), (2.0, 4), (5.0, 3), (10.0, 2))
RTT_BANDS: Final = ((150.0, 5), (300.0, 4), (500.0, 3), (1000.0, 2))
JITTER_BANDS: Final = ((30.0, 5), (50.0, 4), (100.0, 3), (200.0, 2))
# Frame rate: the first floor the value reaches gives the level.
FPS_FLOORS: Final = ((24.0, 5), (15.0, 4), (10.0, 3), (5.0, 2))


def band(value: float, bands: Iterable[tuple[float, int]]) -> int:
    """The level ``value`` earns in ``bands``; 1 when it is past all of them."""
    for limit, level in bands:
        if value < limit:
            return level
    return 1


def quality_level(
    *,
    packets: int,
    loss_pct: float,
    rtt_ms: float | None,
    jitter_ms: float | None,
    fps: float,
    video_expected: bool,
) -> int:
    """0 when no packet arrived this second; otherwise 1-5, the worst of the metrics known.

    ``video_expected``: the far end has sent video in this call, so a frame rate that falls is a
    quality problem (a one-way or audio-only call is not judged on fps)."""
    if packets <= 0:
        return 0
    levels = [band(loss_pct, LOSS_BANDS)]
    if rtt_ms is not None:
        levels.append(band(rtt_ms, RTT_BANDS))
    if jitter_ms is not None:
        levels.append(band(jitter_ms, JITTER_BANDS))
    if video_expected:
        levels.append(next((level for floor, level in FPS_FLOORS if fps >= floor), 1))
    return min(levels)


class BitrateCeiling:
    """Loss-based ceiling for the video encoder's target bitrate, one decision per sample.

    Loss of ``lossy_pct`` or more for ``lossy_samples`` samples in a row lowers the ceiling by
    ``decrease`` (and again for every further lossy sample); ``clean_samples`` samples in a row
    under ``clean_pct`` raise it by ``increase``; between the two it holds. The ceiling stays
    within [minimum, maximum] (the codec's range); at ``maximum`` it no longer limits anything.
    """

    def __init__(
        self,
        minimum: int,
        maximum: int,
        *,
        lossy_pct: float = 5.0,
        lossy_samples: int = 2,
        clean_pct: float = 1.0,
        clean_samples: int = 5,
        decrease: float = 0.8,
        increase: float = 1.1,
    ) -> None:
        if not 0 < minimum <= maximum:
            raise ValueError(f"bitrate range: need 0 < minimum <= maximum, got {minimum}..{maximum}")
        self.minimum, self.maximum = minimum, maximum
        self.ceiling = maximum
        self._lossy_pct, self._lossy_samples = lossy_pct, lossy_samples
        self._clean_pct, self._clean_samples = clean_pct, clean_samples
        self._decrease, self._increase = decrease, increase
        self._lossy_run = 0
        self._clean_run = 0

    def update(self, loss_pct: float | None) -> int:
        """The ceiling after a sample of the far end's loss of our video (None: no report)."""
        if loss_pct is None:
            return self.ceiling
        if loss_pct >= self._lossy_pct:
            self._lossy_run += 1
            self._clean_run = 0
            if self._lossy_run >= self._lossy_samples:
                self.ceiling = max(self.minimum, int(self.ceiling * self._decrease))
        elif loss_pct < self._clean_pct:
            self._clean_run += 1
            self._lossy_run = 0
            if self._clean_run >= self._clean_samples:
                self._clean_run = 0
                self.ceiling = min(self.maximum, int(self.ceiling * self._increase))
        else:
            self._lossy_run = self._clean_run = 0
        return self.ceiling


class StatsMeter:
    """Turns successive ``getStats()`` reports and frame counts into QualitySamples."""

    def __init__(self) -> None:
        self._packets: dict[tuple[str, int], tuple[int, int]] = {}  # (kind, ssrc) -> received, lost
        # (kind, ssrc) of our streams -> the far end's last report's timestamp, when we first saw it
        self._reports: dict[tuple[str, int], tuple[object, float]] = {}
        self._bytes: tuple[int, int] | None = None  # transport bytes received, sent
        self._frames: int | None = None
        self._at: float | None = None
        self.video_seen = False
        self.expect_video = True  # False while the call is audio only (media/fallback.py)

    def sample(
        self,
        report: Iterable[Any],
        *,
        now: float,
        video_frames: int,
        size: tuple[int, int] | None,
        ceiling: int | None,
    ) -> QualitySample | None:
        """A sample for the time since the previous call; None for the first (the baseline)."""
        elapsed = None if self._at is None else max(now - self._at, 1e-3)
        self._at = now
        received = lost = 0
        jitters: list[float] = []
        rtts: list[float] = []
        sent_loss: float | None = None
        bytes_in = bytes_out = 0
        for stats in report:
            kind = getattr(stats, "type", None)
            if kind == "inbound-rtp":
                key = (stats.kind, stats.ssrc)
                before = self._packets.get(key, (0, 0))  # a new stream: all of it is new
                self._packets[key] = (stats.packetsReceived, stats.packetsLost)
                received += max(0, stats.packetsReceived - before[0])
                lost += max(0, stats.packetsLost - before[1])
                if stats.packetsReceived > before[0]:  # a stream that stopped keeps its last jitter
                    clock = VIDEO_CLOCK_KHZ if stats.kind == "video" else AUDIO_CLOCK_KHZ
                    jitters.append(stats.jitter / clock)
            elif kind == "remote-inbound-rtp":
                if not self._fresh_report(stats, now):
                    continue
                if stats.roundTripTime is not None:
                    rtts.append(stats.roundTripTime * 1000.0)
                if stats.kind == "video":
                    sent_loss = stats.fractionLost * 100.0 / 256.0  # RTCP's fraction: n/256
            elif kind == "transport":
                bytes_in += stats.bytesReceived
                bytes_out += stats.bytesSent
        previous_bytes, self._bytes = self._bytes, (bytes_in, bytes_out)
        previous_frames, self._frames = self._frames, video_frames
        if elapsed is None or previous_bytes is None or previous_frames is None:
            return None
        fps = (video_frames - previous_frames) / elapsed
        self.video_seen = self.video_seen or video_frames > 0
        kbps_in = max(0, bytes_in - previous_bytes[0]) * 8 / elapsed / 1000.0
        kbps_out = max(0, bytes_out - previous_bytes[1]) * 8 / elapsed / 1000.0
        loss_pct = 100.0 * lost / (received + lost) if received + lost else 0.0
        rtt = max(rtts) if rtts else None
        jitter = max(jitters) if jitters else None
        level = quality_level(
            packets=received,
            loss_pct=loss_pct,
            rtt_ms=rtt,
            jitter_ms=jitter,
            fps=fps,
            video_expected=self.video_seen and self.expect_video,
        )
        return QualitySample(
            level=level,
            rtt_ms=_round(rtt),
            jitter_ms=_round(jitter),
            loss_pct=round(loss_pct, 2),
            sent_loss_pct=_round(sent_loss),
            fps=round(fps, 1),
            width=None if size is None else size[0],
            height=None if size is None else size[1],
            inbound_kbps=round(kbps_in, 1),
            outbound_kbps=round(kbps_out, 1),
            video_kbps_ceiling=None if ceiling is None else ceiling // 1000,
        )

    def _fresh_report(self, stats: Any, now: float) -> bool:
        key = (stats.kind, stats.ssrc)
        known = self._reports.get(key)
        if known is None or known[0] != stats.timestamp:
            self._reports[key] = known = (stats.timestamp, now)
        return now - known[1] <= REPORT_FRESH_SECONDS


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


# -- aiortc internals ---------------------------------------------------------------------------------
# aiortc has no public API for an encoder's target bitrate or for what reaches a video decoder.
# Everything private this project touches is here, checked against the one version it was read in.

PINNED_AIORTC: Final = "1.16.0"
_SENDER_ENCODER: Final = "_RTCRtpSender__encoder"  # set lazily by the sender's first encode
_SENDER_ENABLED: Final = "_enabled"  # False: frames are read from the track and dropped
_RECEIVER_JITTER_BUFFER: Final = "_RTCRtpReceiver__jitter_buffer"  # .add(packet) -> (pli, frame)
_DTLS_RX_PACKETS: Final = "_RTCDtlsTransport__rx_packets"  # every datagram: DTLS, RTP and RTCP
_warned = False


def internals_usable() -> bool:
    """Whether the aiortc installed is the one the private access below was written against."""
    global _warned
    import aiortc

    if aiortc.__version__ == PINNED_AIORTC:
        return True
    if not _warned:
        _warned = True
        log.warning(
            "aiortc %s is not the pinned %s: no bitrate adaptation, no key-frame gate",
            aiortc.__version__,
            PINNED_AIORTC,
        )
    return False


def pause_video_sender(sender: Any, paused: bool) -> None:
    """Stop or resume encoding and sending ``sender``'s video; its track is still read (frames
    do not pile up), and the first frame after a pause is a key frame (the far end's decoder
    lost its references). With another aiortc nothing changes: video goes on."""
    if not internals_usable():
        return
    enabled = not paused
    if getattr(sender, _SENDER_ENABLED) == enabled:
        return
    setattr(sender, _SENDER_ENABLED, enabled)
    if enabled:
        sender._send_keyframe()


def encoder_bitrate_range(sender: Any) -> tuple[int, int] | None:
    """(minimum, maximum) target bitrate of ``sender``'s video encoder, which clamps to it;
    None before the sender has encoded anything or for an encoder without a target."""
    from aiortc.codecs import h264, vpx

    encoder = getattr(sender, _SENDER_ENCODER, None)
    if isinstance(encoder, CappedEncoder):
        encoder = encoder.inner
    if isinstance(encoder, vpx.Vp8Encoder):
        return vpx.MIN_BITRATE, vpx.MAX_BITRATE
    if isinstance(encoder, h264.H264Encoder):
        return h264.MIN_BITRATE, h264.MAX_BITRATE
    return None


class CappedEncoder:
    """Stands in for a sender's video encoder: REMB's target passes, held under our ceiling.

    The sender calls ``encode``/``pack`` (in its encoding thread) and sets ``target_bitrate``
    on every REMB; the encoder rebuilds its codec when the target moves by more than 10 %."""

    def __init__(self, encoder: Any, ceiling: int) -> None:
        self.inner = encoder
        self._requested: int = encoder.target_bitrate
        self._ceiling = ceiling
        self.inner.target_bitrate = min(self._requested, ceiling)

    def encode(self, frame: Any, force_keyframe: bool = False) -> Any:
        return self.inner.encode(frame, force_keyframe)

    def pack(self, packet: Any) -> Any:
        return self.inner.pack(packet)

    @property
    def target_bitrate(self) -> int:
        return int(self.inner.target_bitrate)

    @target_bitrate.setter
    def target_bitrate(self, bitrate: int) -> None:
        self._requested = bitrate  # the far end's estimate, kept for when the ceiling rises
        self.inner.target_bitrate = min(bitrate, self._ceiling)

    def limit(self, ceiling: int) -> None:
        self._ceiling = ceiling
        self.inner.target_bitrate = min(self._requested, ceiling)


def cap_video_encoder(sender: Any, ceiling: int) -> CappedEncoder | None:
    """Hold ``sender``'s video encoder under ``ceiling`` bps; None before it encoded anything."""
    encoder = getattr(sender, _SENDER_ENCODER, None)
    if encoder is None or not hasattr(encoder, "target_bitrate"):
        return None
    if not isinstance(encoder, CappedEncoder):
        encoder = CappedEncoder(encoder, ceiling)
        setattr(sender, _SENDER_ENCODER, encoder)
    encoder.limit(ceiling)
    return encoder


JitterAdd = Callable[[Any], tuple[bool, Any]]


@dataclass(frozen=True)
class JitterControls:
    """A video receiver's jitter buffer, as the key-frame gate works it: ``add(packet) -> (pli,
    frame)`` is aiortc's own; ``skip_hole()`` and ``drop_before(timestamp)`` drop packets that
    hold live pictures back (see ``skip_jitter_hole`` and ``drop_jitter_backlog``), each returning
    how many slots it dropped."""

    add: JitterAdd
    skip_hole: Callable[[], int] = lambda: 0
    drop_before: Callable[[int], int] = lambda timestamp: 0


def gate_video_receiver(receiver: Any, wrap: Callable[[JitterControls], JitterAdd]) -> bool:
    """Put ``wrap(controls)`` in front of the receiver's jitter buffer: every RTP packet goes
    through it, and an encoded frame it does not return is never decoded. False if it could not be."""
    buffer = getattr(receiver, _RECEIVER_JITTER_BUFFER, None)
    if buffer is None or not callable(getattr(buffer, "add", None)):
        return False
    buffer.add = wrap(jitter_controls(buffer))
    return True


def jitter_controls(buffer: Any) -> JitterControls:
    """The controls of one aiortc ``JitterBuffer`` (its own ``add``, before any wrapping)."""
    return JitterControls(
        buffer.add, lambda: skip_jitter_hole(buffer), lambda timestamp: drop_jitter_backlog(buffer, timestamp)
    )


def _waiting_packets(buffer: Any) -> list[Any | None] | None:
    """The buffer's slots in sequence order from its origin (None: missing), or None if unreadable."""
    origin, slots = getattr(buffer, "_origin", None), getattr(buffer, "_packets", None)
    if not isinstance(origin, int) or not isinstance(slots, list) or not slots:
        return None
    ordered: list[Any | None] = []
    for offset in range(len(slots)):
        sequence = (origin + offset) & 0xFFFF
        packet = slots[sequence % len(slots)]
        ordered.append(packet if packet is not None and packet.sequence_number == sequence else None)
    return ordered


def skip_jitter_hole(buffer: Any) -> int:
    """Drop the packets in front of the first packet that follows a missing one in aiortc's
    jitter buffer, so that what follows the hole can come out; how many slots were dropped (0 when
    no packet waits behind a hole).

    The buffer hands out a frame only when every packet from its origin on is there: a packet that
    is never repaired (lost while a relay was frozen: too old for the sender to send again) holds
    back everything behind it until 512 more packets have come, many seconds at a low bitrate."""
    missing = False
    for offset, packet in enumerate(_waiting_packets(buffer) or ()):
        if packet is None:
            missing = True
        elif missing:
            buffer.remove(offset)
            return offset
    return 0


def drop_jitter_backlog(buffer: Any, timestamp: int) -> int:
    """Drop every packet in front of the first one of the frame with RTP ``timestamp``; how many
    slots were dropped (0 when no such packet waits).

    aiortc's buffer hands out one frame per packet that arrives: frames that piled up (behind a
    hole, or released by a frozen relay) then come out one per packet for good, seconds late at a
    steady rate. Dropped, the next key frame is live."""
    for offset, packet in enumerate(_waiting_packets(buffer) or ()):
        if packet is not None and packet.timestamp == timestamp:
            if offset:
                buffer.remove(offset)
            return offset
    return 0


def inbound_packets(pc: Any) -> int | None:
    """Datagrams received so far on ``pc``'s transports (media, RTCP and DTLS alike); None if it
    cannot be read. getStats() has the same number, but not synchronously, per frame."""
    if not internals_usable():
        return None
    transports = {id(t.receiver.transport): t.receiver.transport for t in pc.getTransceivers()}
    counts: list[int] = []
    for transport in transports.values():
        count = getattr(transport, _DTLS_RX_PACKETS, None)
        if not isinstance(count, int):
            return None
        counts.append(count)
    return sum(counts) if counts else None
