"""Network preflight against the real development stack: the relay's ``time`` endpoint, the clinic
stand-in's TURN credentials, real coturn, and a media test through it in the preflight child."""

from __future__ import annotations

import asyncio
import time

from telehealth_client import events
from telehealth_client.consultation.patient import DeviceReport
from telehealth_client.preflight import PreflightReport, run_network_preflight
from telehealth_devstack.stack import DevStack
from tests.support.consultation import (
    CHECK_IN,
    CONSULTATION,
    Parts,
    RecordingHub,
)
from tests.support.preflight import kiosk_settings, packet_loss

# The child's aiortc import, the connection and the measuring window, on a busy machine.
PREFLIGHT_WITHIN = 40.0


async def test_good_conditions_give_video_with_the_numbers(stack: DevStack) -> None:
    settings = kiosk_settings(stack, TELEHEALTH_PREFLIGHT_MEDIA_SECONDS="2")

    report = await asyncio.wait_for(run_network_preflight(settings), PREFLIGHT_WITHIN)

    assert report.verdict == "video", report
    assert [(c.name, c.ok) for c in report.checks] == [
        ("signaling", True),
        ("turn-credentials", True),
        ("turn-allocation", True),
        ("media", True),
    ]
    metrics = report.metrics
    assert metrics is not None
    assert metrics.audio_back and metrics.video_back, metrics
    assert metrics.loss_percent < 1.0, metrics
    assert metrics.rtt_ms is not None and 0 < metrics.rtt_ms < 300, metrics
    assert 0 < metrics.jitter_ms < 1000, metrics  # converted from RTP clock units: thousands otherwise
    assert metrics.bitrate_kbps > 50, metrics  # audio and video came back through TURN


async def test_turn_down_gives_cannot_connect_naming_turn_without_a_hang(stack: DevStack) -> None:
    await stack.turn.stop()
    settings = kiosk_settings(stack)

    started = time.monotonic()
    report = await asyncio.wait_for(run_network_preflight(settings), PREFLIGHT_WITHIN)

    assert report.verdict == "cannot-connect"
    assert report.reasons == ("turn-allocation: TURN server unreachable",)
    assert report.metrics is None
    assert [c.name for c in report.checks if not c.ok] == ["turn-allocation"]
    assert time.monotonic() - started < 10.0


async def test_an_unreachable_origin_gives_cannot_connect_naming_signaling(stack: DevStack) -> None:
    await stack.relay.stop()
    settings = kiosk_settings(stack, TELEHEALTH_REQUEST_TIMEOUT_SECONDS="2")

    report = await asyncio.wait_for(run_network_preflight(settings), PREFLIGHT_WITHIN)

    assert report.verdict == "cannot-connect"
    assert len(report.reasons) == 1 and report.reasons[0].startswith("signaling: the PubNub origin ")
    assert [c.name for c in report.checks] == ["signaling"]  # nothing after a failed check


async def test_eight_percent_loss_on_the_relay_path_gives_audio_only_with_the_reason(stack: DevStack) -> None:
    settings = kiosk_settings(stack, TELEHEALTH_PREFLIGHT_MEDIA_SECONDS="5")

    with packet_loss(stack.turn, 0.08):
        report = await asyncio.wait_for(run_network_preflight(settings), PREFLIGHT_WITHIN)

    assert report.verdict == "audio-only", report
    assert report.metrics is not None and report.metrics.loss_percent > 5.0
    assert any(reason.startswith("packet loss ") and "is over 5 %" in reason for reason in report.reasons)


async def test_the_verdict_reaches_the_provider_as_device_status(stack: DevStack, parts: Parts) -> None:
    network = await asyncio.wait_for(run_network_preflight(kiosk_settings(stack)), PREFLIGHT_WITHIN)
    assert network.verdict == "video"
    provider_hub = RecordingHub()
    await parts.provider(provider_hub)
    await parts.record_consent()
    patient = parts.patient(RecordingHub())

    await patient.check_in(**CHECK_IN)
    status = PreflightReport(network).device_status()
    await patient.report_devices(status)

    reported = await provider_hub.wait_for(lambda e: isinstance(e, events.DeviceStatusReported))
    assert reported[-1] == events.DeviceStatusReported(CONSULTATION, "skipped", "skipped", "skipped", "video")
    assert status == DeviceReport("skipped", "skipped", "skipped", "video")
