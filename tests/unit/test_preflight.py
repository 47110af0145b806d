"""The preflight's pure parts: numbers from getStats snapshots and the verdict at every boundary."""

from __future__ import annotations

from typing import Any

import pytest

from telehealth_client.preflight import (
    Check,
    MediaMetrics,
    NetworkReport,
    PreflightReport,
    Thresholds,
    judge,
    metrics_from_stats,
)

LIMITS = Thresholds()  # the documented defaults: 30 ms, 1 %, 5 %, 300 ms
PASSED = [Check("signaling", True, 3.0), Check("turn-credentials", True, 2.0), Check("media", True, 600.0)]


def metrics(**changes: Any) -> MediaMetrics:
    values: dict[str, Any] = {
        "rtt_ms": 20.0,
        "jitter_ms": 5.0,
        "loss_percent": 0.0,
        "bitrate_kbps": 800.0,
        "audio_back": True,
        "video_back": True,
    }
    return MediaMetrics(**{**values, **changes})


def test_the_documented_defaults() -> None:
    assert (
        LIMITS.good_jitter_ms,
        LIMITS.good_loss_percent,
        LIMITS.poor_loss_percent,
        LIMITS.poor_rtt_ms,
    ) == (
        30.0,
        1.0,
        5.0,
        300.0,
    )


def test_good_numbers_give_video_without_reasons() -> None:
    assert judge(PASSED, metrics(jitter_ms=29.9, loss_percent=0.99, rtt_ms=300.0), LIMITS) == ("video", ())


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"jitter_ms": 30.0}, "jitter 30 ms is not under 30 ms"),
        ({"loss_percent": 1.0}, "packet loss 1.0 % is not under 1 %"),
        ({"loss_percent": 5.0}, "packet loss 5.0 % is not under 1 %"),
    ],
)
def test_numbers_between_good_and_poor_give_video_with_the_reason(
    changes: dict[str, Any], reason: str
) -> None:
    assert judge(PASSED, metrics(**changes), LIMITS) == ("video", (reason,))


@pytest.mark.parametrize(
    ("changes", "reasons"),
    [
        ({"loss_percent": 5.01}, ("packet loss 5.0 % is over 5 %",)),
        ({"loss_percent": 8.2}, ("packet loss 8.2 % is over 5 %",)),
        ({"rtt_ms": 300.5}, ("round-trip time 300 ms is over 300 ms",)),
        ({"video_back": False}, ("no video came back through TURN",)),
        (
            {"loss_percent": 9.0, "rtt_ms": 450.0},
            ("packet loss 9.0 % is over 5 %", "round-trip time 450 ms is over 300 ms"),
        ),
    ],
)
def test_poor_numbers_give_audio_only_with_the_reasons(
    changes: dict[str, Any], reasons: tuple[str, ...]
) -> None:
    assert judge(PASSED, metrics(**changes), LIMITS) == ("audio-only", reasons)


def test_no_round_trip_measured_is_not_held_against_the_path() -> None:
    assert judge(PASSED, metrics(rtt_ms=None), LIMITS) == ("video", ())


def test_a_failed_check_gives_cannot_connect_naming_it_whatever_the_numbers() -> None:
    checks = [*PASSED[:1], Check("turn-allocation", False, reason="TURN server unreachable")]
    assert judge(checks, None, LIMITS) == ("cannot-connect", ("turn-allocation: TURN server unreachable",))
    assert judge(checks, metrics(), LIMITS)[0] == "cannot-connect"


def test_no_media_back_gives_cannot_connect() -> None:
    assert judge(PASSED, None, LIMITS) == ("cannot-connect", ("media: no media came back through TURN",))
    nothing = metrics(audio_back=False, video_back=False)
    assert judge(PASSED, nothing, LIMITS) == ("cannot-connect", ("media: no media came back through TURN",))


def test_thresholds_from_settings_are_used() -> None:
    strict = Thresholds(good_jitter_ms=10.0, good_loss_percent=0.5, poor_loss_percent=2.0, poor_rtt_ms=100.0)
    assert judge(PASSED, metrics(loss_percent=3.0), strict) == (
        "audio-only",
        ("packet loss 3.0 % is over 2 %",),
    )
    assert judge(PASSED, metrics(rtt_ms=150.0), strict)[0] == "audio-only"
    assert judge(PASSED, metrics(jitter_ms=12.0), strict) == ("video", ("jitter 12 ms is not under 10 ms",))


def snapshot(at: float, received: int, *streams: dict[str, Any]) -> dict[str, Any]:
    transport = {"type": "transport", "kind": None, "packetsReceived": 0, "bytesReceived": received}
    return {"at": at, "stats": [transport, *streams]}


def test_numbers_from_stats_convert_jitter_to_ms_and_take_the_worst_stream() -> None:
    first = snapshot(100.0, 10_000)
    middle = snapshot(
        101.0,
        60_000,
        {
            "type": "remote-inbound-rtp",
            "kind": "video",
            "packetsReceived": 50,
            "packetsLost": 0,
            "roundTripTime": 0.4,
        },
    )
    last = snapshot(
        102.0,
        260_000,
        {"type": "inbound-rtp", "kind": "audio", "packetsReceived": 92, "packetsLost": 8, "jitter": 960},
        {"type": "inbound-rtp", "kind": "video", "packetsReceived": 198, "packetsLost": 2, "jitter": 900},
        {"type": "remote-inbound-rtp", "kind": "video", "packetsReceived": 97, "packetsLost": 3,
         "jitter": 9000, "roundTripTime": 0.012},
        {"type": "outbound-rtp", "kind": "video"},
    )  # fmt: skip

    found = metrics_from_stats(
        [first, middle, last], {"audio": 48_000, "video": 90_000}, {"audio": 5, "video": 0}
    )

    assert found.loss_percent == pytest.approx(8.0)  # the audio that came back: 8 of 100
    assert found.jitter_ms == pytest.approx(100.0)  # 9000 units of a 90 kHz clock, not 9000 ms
    assert found.rtt_ms == pytest.approx(12.0)  # the lowest report: the path's own
    assert found.bitrate_kbps == pytest.approx(8 * 250_000 / 2 / 1000)
    assert (found.audio_back, found.video_back) == (True, False)


def test_numbers_from_stats_without_reports() -> None:
    found = metrics_from_stats(
        [snapshot(5.0, 0), snapshot(5.0, 0, {"type": "inbound-rtp", "kind": "audio", "packetsLost": -2})],
        {"audio": 48_000},
        {},
    )
    assert found == MediaMetrics(None, 0.0, 0.0, 0.0, False, False)


def test_the_report_gives_the_device_status_the_provider_gets() -> None:
    from devices.report import CameraResult, DeviceReport

    devices = DeviceReport(status="fail", camera=CameraResult(status="fail", device="/dev/video0"))
    network = NetworkReport(
        tuple(PASSED), metrics(loss_percent=9.0), "audio-only", ("packet loss 9.0 % is over 5 %",)
    )
    report = PreflightReport(network, devices)

    status = report.device_status()
    assert (status.camera, status.microphone, status.speaker, status.network) == (
        "fail",
        "skipped",
        "skipped",
        "audio-only",
    )
    assert not report.passed
    data = report.to_dict()
    assert data["deviceStatus"] == {
        "camera": "fail",
        "microphone": "skipped",
        "speaker": "skipped",
        "network": "audio-only",
    }
    assert data["network"]["reasons"] == ["packet loss 9.0 % is over 5 %"]
    assert data["devices"]["camera"]["status"] == "fail"
    assert "network           AUDIO-ONLY" in report.lines()
    assert PreflightReport(NetworkReport(tuple(PASSED), metrics(), "video")).passed
