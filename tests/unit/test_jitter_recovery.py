"""The key-frame gate working aiortc's real jitter buffer with real VP8 packets: a packet that is
never repaired, and frames that piled up, must not keep the picture stuck or seconds late (what a
Chromium provider's video did to the kiosk after TURN froze for 10 s: nothing for 30 s, then a
steady 3.2 s behind). Real aiortc JitterBuffer and Vp8Encoder, no network; the clock is the test's."""

from __future__ import annotations

import fractions
from collections.abc import Iterator

import numpy as np
from aiortc.codecs.vpx import Vp8Encoder, vp8_depayload
from aiortc.jitterbuffer import JitterBuffer
from aiortc.rtp import RtpPacket
from av import VideoFrame

from telehealth_client.media.call import HOLE_SECONDS, KeyframeGate, is_key_frame
from telehealth_client.media.quality import drop_jitter_backlog, jitter_controls, skip_jitter_hole

FRAME_TICKS = 3000  # 30 fps at the 90 kHz RTP clock


class Sender:
    """A VP8 sender: every frame a noisy picture (several RTP packets each), numbered packets."""

    def __init__(self) -> None:
        self.encoder = Vp8Encoder()
        self.rng = np.random.default_rng(7)
        self.sequence = 1000
        self.index = 0

    def frame(self, *, key: bool = False, flat: bool = False) -> list[RtpPacket]:
        """The next frame's packets: several for a noisy picture, one for a flat one (a sender
        that cut its bitrate after a loss)."""
        if flat:
            image = np.full((240, 320, 3), 128, np.uint8)
        else:
            image = self.rng.integers(0, 256, (240, 320, 3), dtype=np.uint8)
        picture = VideoFrame.from_ndarray(image, format="bgr24")
        picture.pts, picture.time_base = self.index * FRAME_TICKS, fractions.Fraction(1, 90000)
        payloads, _ = self.encoder.encode(picture, force_keyframe=key)
        packets = []
        for payload in payloads:
            packet = RtpPacket(
                payload_type=96, sequence_number=self.sequence, timestamp=self.index * FRAME_TICKS
            )
            packet._data = vp8_depayload(payload)  # type: ignore[attr-defined]  # as aiortc's receiver sets it
            packets.append(packet)
            self.sequence = (self.sequence + 1) & 0xFFFF
        self.index += 1
        return packets

    def live_at(self, seconds: float) -> None:
        """The next frame is the one made ``seconds`` into the stream: a live sender's timestamps
        move on while a frozen relay drops what it cannot hold."""
        self.index = round(seconds * 30)


def arrivals(frames: list[list[RtpPacket]], start: float) -> Iterator[tuple[float, RtpPacket]]:
    """Each frame's packets when a live 30 fps stream sends them."""
    for number, packets in enumerate(frames):
        for packet in packets:
            yield start + number / 30, packet


def test_a_packet_never_repaired_holds_the_picture_back_only_until_hole_seconds() -> None:
    sender = Sender()
    buffer = JitterBuffer(capacity=512, is_video=True)
    now = [0.0]
    gate = KeyframeGate(jitter_controls(buffer), pli_every=3600.0, clock=lambda: now[0])
    out: list[tuple[float, bool, bool]] = []  # (when, key frame, PLI asked)

    def feed(at: float, packet: RtpPacket) -> None:
        now[0] = at
        pli, frame = gate(packet)
        out.append((at, frame is not None and is_key_frame(frame.data), pli))
        if frame is not None:
            shown.append(frame.timestamp)

    shown: list[int] = []
    before = [sender.frame(key=True)] + [sender.frame() for _ in range(4)]
    assert all(len(packets) > 1 for packets in before), "each frame must span several packets"
    for at, packet in arrivals(before, 0.0):
        feed(at, packet)
    assert len(shown) == 4  # the fifth waits for the next frame's first packet
    lost = sender.frame()
    for at, packet in arrivals([lost[1:]], 5 / 30):  # its first packet never comes, nor a repair
        feed(at, packet)
    after = [sender.frame() for _ in range(30)]  # one second of frames behind the hole
    for at, packet in arrivals(after, 6 / 30):
        feed(at, packet)
    # The hole was given up once, HOLE_SECONDS after it held frames back; a PLI asked for the key
    # frame at once, and nothing undecodable came out meanwhile.
    assert gate.holes_skipped == 1
    skipped_at = next(at for at, _, pli in out if pli and at > 0)
    assert 4 / 30 + HOLE_SECONDS <= skipped_at < 5 / 30 + HOLE_SECONDS + 0.1
    # The frame in front of the hole went too (the missing packet might have been its last).
    assert len(shown) == 4 and gate.waiting
    key = sender.frame(key=True)
    for at, packet in arrivals([key, sender.frame(), sender.frame()], 36 / 30):
        feed(at, packet)
    assert shown[4:] == [key[0].timestamp, key[0].timestamp + FRAME_TICKS]
    assert not gate.waiting


def test_frames_piled_up_behind_a_hole_are_dropped_for_a_live_key_frame() -> None:
    """A frozen relay releases what it held at once, one packet lost in the middle; the sender,
    told of the loss, sends one packet per frame. aiortc's buffer hands out one frame per packet:
    without the drop, the 1.5 s of frames that piled up behind the hole while it was waited for
    would stay ahead of every live picture for good."""
    sender = Sender()
    buffer = JitterBuffer(capacity=512, is_video=True)
    now = [0.0]
    gate = KeyframeGate(jitter_controls(buffer), pli_every=3600.0, clock=lambda: now[0])
    shown: list[tuple[float, int]] = []

    def feed(at: float, packet: RtpPacket) -> None:
        now[0] = at
        _, frame = gate(packet)
        if frame is not None:
            shown.append((at, frame.timestamp))

    for at, packet in arrivals([sender.frame(key=True), sender.frame(), sender.frame()], 0.0):
        feed(at, packet)
    released = [sender.frame(flat=True) for _ in range(5)]
    assert len(sender.frame(flat=True)) == 1  # lost: a whole frame's only packet
    released += [sender.frame(flat=True) for _ in range(45)]
    for packet in (packet for packets in released for packet in packets):
        feed(10.0, packet)  # all at once, when the relay resumes
    before = len(shown)
    sender.live_at(10.0 + 1 / 30)
    for at, packet in arrivals([sender.frame(flat=True) for _ in range(30)], 10.0 + 1 / 30):
        feed(at, packet)
    assert gate.holes_skipped == 1 and gate.backlogs_dropped == 1
    assert len(shown) == before and gate.waiting  # nothing of the pile, nothing undecodable
    key = sender.frame(key=True, flat=True)
    assert len(key) == 1
    arrived = 11.1
    for at, packet in arrivals([key, sender.frame(flat=True)], arrived):
        feed(at, packet)
    # The key frame comes out with the next packet after it, not behind 45 stale frames.
    assert shown[before:] == [(arrived + 1 / 30, key[0].timestamp)]
    assert not gate.waiting


def test_the_buffer_helpers_leave_a_buffer_without_a_hole_or_pile_alone() -> None:
    sender = Sender()
    buffer = JitterBuffer(capacity=512, is_video=True)
    assert skip_jitter_hole(buffer) == 0 and drop_jitter_backlog(buffer, 0) == 0  # empty: no origin
    packets = sender.frame(key=True) + sender.frame()
    for packet in packets:
        buffer.add(packet)
    assert skip_jitter_hole(buffer) == 0
    assert drop_jitter_backlog(buffer, 123) == 0  # no packet of that frame waits
    waiting = [p for p in packets if p.timestamp == FRAME_TICKS]
    assert drop_jitter_backlog(buffer, FRAME_TICKS) == 0  # the frame at the front is that one
    assert buffer._origin == waiting[0].sequence_number  # type: ignore[attr-defined]


def test_a_frozen_relays_backlog_is_never_shown_even_its_key_frames() -> None:
    """A relay frozen 10 s releases what it held at once: clean frames, a key frame among them (the
    sender answered a PLI just before the freeze), all 10 s old. Measured only against the packet
    before, they looked on time to each other and the key frame let 30 stale pictures through
    (seen from two agents under load: the patient showed 1012..1056 of the provider's, 10 s old).
    None is shown; the first picture is the live key frame asked for."""
    sender = Sender()
    buffer = JitterBuffer(capacity=512, is_video=True)
    now = [0.0]
    gate = KeyframeGate(jitter_controls(buffer), pli_every=3600.0, clock=lambda: now[0])
    shown: list[int] = []

    def feed(at: float, packet: RtpPacket) -> None:
        now[0] = at
        _, frame = gate(packet)
        if frame is not None:
            shown.append(frame.timestamp)

    for at, packet in arrivals([sender.frame(key=True)] + [sender.frame(flat=True) for _ in range(5)], 0.0):
        feed(at, packet)
    live_before = len(shown)
    held = [sender.frame(flat=True) for _ in range(4)] + [sender.frame(key=True, flat=True)]
    held += [sender.frame(flat=True) for _ in range(30)]
    for packet in (packet for packets in held for packet in packets):
        feed(10.0, packet)  # all at once, when the relay resumes
    assert len(shown) == live_before and gate.waiting
    sender.live_at(10.0 + 1 / 30)
    for at, packet in arrivals([sender.frame(flat=True) for _ in range(5)], 10.0 + 1 / 30):
        feed(at, packet)
    assert len(shown) == live_before and gate.waiting  # live, but no key frame yet
    key = sender.frame(key=True, flat=True)
    for at, packet in arrivals([key, sender.frame(flat=True), sender.frame(flat=True)], 10.2):
        feed(at, packet)
    assert shown[live_before:] == [key[0].timestamp, key[0].timestamp + FRAME_TICKS]
    assert not gate.waiting


def test_a_path_whose_delay_grows_for_good_gets_its_picture_back() -> None:
    """The path's delay grows by a second for good, with jitter either side of the stale limit:
    the gate must re-anchor (jitter below the limit is no break in the lateness), not drop most
    frames for ever."""
    sender = Sender()
    buffer = JitterBuffer(capacity=512, is_video=True)
    now = [0.0]
    gate = KeyframeGate(jitter_controls(buffer), pli_every=0.3, clock=lambda: now[0])
    shown: list[float] = []
    packets: list[tuple[float, RtpPacket]] = []
    for index in range(300):  # 10 s at 30 fps, a key frame every half second (PLIs answered)
        media = index / 30
        delay = 0.0 if media < 1.0 else 1.0 + (0.15 if index % 2 else -0.15)
        for packet in sender.frame(key=index % 15 == 0, flat=True):
            packets.append((media + delay, packet))
    for at, packet in sorted(packets, key=lambda item: item[0]):
        now[0] = at
        _, frame = gate(packet)
        if frame is not None:
            shown.append(at)
    late_seconds = [at for at in shown if at >= 5.0]
    assert len(late_seconds) > 100  # 30 fps again well before the end (150 frames from 5 s on)
