"""The aiortc internals media/quality.py relies on, checked against the installed aiortc: this
fails when aiortc changes version or moves the private attributes, before a call quietly loses
its bitrate adaptation or its key-frame gate. Real aiortc objects, no network."""

from __future__ import annotations

import fractions
import inspect

import aiortc
import numpy as np
import pytest
from aiortc import RTCPeerConnection, VideoStreamTrack
from aiortc.codecs import vpx
from aiortc.codecs.vpx import VpxPayloadDescriptor
from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from aiortc.rtcrtpreceiver import RTCRtpReceiver
from av import VideoFrame

from telehealth_client.media import quality
from telehealth_client.media.call import is_key_frame
from telehealth_client.media.quality import (
    PINNED_AIORTC,
    CappedEncoder,
    cap_video_encoder,
    encoder_bitrate_range,
    gate_video_receiver,
    inbound_packets,
    internals_usable,
    pause_video_sender,
)


def test_the_installed_aiortc_is_the_pinned_one() -> None:
    assert aiortc.__version__ == PINNED_AIORTC
    assert internals_usable()


def test_a_different_aiortc_turns_the_internals_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(aiortc, "__version__", "1.17.0")
    monkeypatch.setattr(quality, "_warned", False)
    assert not internals_usable()


def test_the_vp8_encoder_clamps_its_target_to_the_range_we_read() -> None:
    encoder = vpx.Vp8Encoder()
    assert (vpx.MIN_BITRATE, vpx.DEFAULT_BITRATE, vpx.MAX_BITRATE) == (250_000, 500_000, 1_500_000)
    assert encoder.target_bitrate == vpx.DEFAULT_BITRATE
    encoder.target_bitrate = 10
    assert encoder.target_bitrate == vpx.MIN_BITRATE


async def test_the_senders_encoder_is_where_it_is_read_and_is_held_under_the_ceiling() -> None:
    pc = RTCPeerConnection()
    try:
        sender = pc.addTrack(VideoStreamTrack())
        assert hasattr(sender, "_RTCRtpSender__encoder"), "aiortc moved the sender's encoder"
        assert sender._RTCRtpSender__encoder is None  # type: ignore[attr-defined]
        assert encoder_bitrate_range(sender) is None and cap_video_encoder(sender, 300_000) is None
        # What the sender's first encode does: its encoder, created lazily.
        sender._RTCRtpSender__encoder = vpx.Vp8Encoder()  # type: ignore[attr-defined]
        assert encoder_bitrate_range(sender) == (vpx.MIN_BITRATE, vpx.MAX_BITRATE)
        capped = cap_video_encoder(sender, 300_000)
        assert isinstance(capped, CappedEncoder)
        assert sender._RTCRtpSender__encoder is capped  # type: ignore[attr-defined]
        assert capped.inner.target_bitrate == 300_000
        capped.target_bitrate = 1_000_000  # a REMB: held under the ceiling
        assert capped.inner.target_bitrate == 300_000
        assert cap_video_encoder(sender, 800_000) is capped  # wrapped once, the ceiling moved
        assert capped.inner.target_bitrate == 800_000
        frame = VideoFrame.from_ndarray(np.zeros((120, 160, 3), np.uint8), format="bgr24")
        frame.pts, frame.time_base = 0, fractions.Fraction(1, 90000)
        payloads, _ = capped.encode(frame)
        assert payloads and capped.inner.codec.bit_rate == 800_000  # the real codec took it
    finally:
        await pc.close()


async def test_the_receivers_jitter_buffer_is_where_it_is_read() -> None:
    pc = RTCPeerConnection()
    try:
        transceiver = pc.addTransceiver("video", direction="recvonly")
        receiver = transceiver.receiver
        assert isinstance(receiver, RTCRtpReceiver)
        buffer = receiver._RTCRtpReceiver__jitter_buffer  # type: ignore[attr-defined]
        assert (buffer.capacity, buffer._is_video) == (512, True)
        original = buffer.add

        def wrap(controls: quality.JitterControls) -> quality.JitterAdd:
            assert controls.add == original
            return lambda packet: (True, None)

        assert gate_video_receiver(receiver, wrap)
        assert buffer.add(object()) == (True, None)
        # The receiver's packet path calls add(packet) -> (pli, frame) on that same object, and a
        # true pli is what makes it send a PLI.
        source = inspect.getsource(RTCRtpReceiver._handle_rtp_packet)
        assert "pli_flag, encoded_frame = self.__jitter_buffer.add(packet)" in source
        assert "await self._send_rtcp_pli(packet.ssrc)" in source
        assert gate_video_receiver(object(), wrap) is False
    finally:
        await pc.close()


async def test_the_transports_packet_counter_is_where_it_is_read() -> None:
    """The stall watchdog tells a dead path from a far end that sends no media by this counter."""
    pc = RTCPeerConnection()
    try:
        pc.addTrack(VideoStreamTrack())
        pc.addTransceiver("audio", direction="recvonly")
        transport = pc.getTransceivers()[0].receiver.transport
        assert getattr(transport, "_RTCDtlsTransport__rx_packets", None) == 0, "aiortc moved the counter"
        assert inbound_packets(pc) == 0
        transport._RTCDtlsTransport__rx_packets = 7  # type: ignore[attr-defined]
        assert inbound_packets(pc) == 7
    finally:
        await pc.close()


async def test_a_paused_video_sender_sends_nothing_and_resumes_with_a_key_frame() -> None:
    """Audio-only fallback: a paused sender still reads its track (nothing piles up) but encodes
    nothing; the first frame after it resumes is a key frame (the far end lost its references)."""
    pc = RTCPeerConnection()
    try:
        sender = pc.addTrack(VideoStreamTrack())
        codec = RTCRtpCodecParameters(mimeType="video/VP8", clockRate=90000, payloadType=96)

        async def next_frame_is_key() -> bool | None:
            encoded = await sender._next_encoded_frame(codec)
            if encoded is None:
                return None
            _, data = VpxPayloadDescriptor.parse(encoded.payloads[0])
            return is_key_frame(data)

        assert await next_frame_is_key() is True  # a new encoder starts with one
        assert await next_frame_is_key() is False
        pause_video_sender(sender, True)
        assert [await next_frame_is_key() for _ in range(3)] == [None, None, None]
        pause_video_sender(sender, True)  # again: no change
        pause_video_sender(sender, False)
        assert await next_frame_is_key() is True
        assert await next_frame_is_key() is False
    finally:
        await pc.close()
