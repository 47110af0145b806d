"""DEVICE_STATUS verdicts from the kiosk's device check (devices.report), as the wire spells them."""

from __future__ import annotations

from devices.report import CameraResult, MicrophoneResult, SpeakerResult
from devices.report import DeviceReport as CheckReport
from telehealth_client.consultation.patient import DeviceReport
from telehealth_client.consultation.session import now
from telehealth_client.protocol.messages import DeviceStatus, decode, encode


def test_ok_warn_fail_become_pass_warn_fail_and_an_unchecked_device_is_skipped() -> None:
    check = CheckReport(
        status="fail",
        camera=CameraResult(device="/dev/video0", status="ok"),
        microphone=MicrophoneResult(device="usb mic", status="warn"),
        speaker=None,  # --skip speaker
    )
    assert DeviceReport.from_check(check) == DeviceReport("pass", "warn", "skipped", "unknown")
    failing = CheckReport(status="fail", speaker=SpeakerResult(device="hdmi", status="fail"))
    assert DeviceReport.from_check(failing, "audio-only") == DeviceReport(
        "skipped", "skipped", "fail", "audio-only"
    )


def test_the_verdicts_make_a_valid_device_status_message() -> None:
    report = DeviceReport.from_check(
        CheckReport(status="warn", microphone=MicrophoneResult(device="usb mic", status="warn"))
    )
    wire = encode(
        DeviceStatus(
            camera=report.camera,
            microphone=report.microphone,
            speaker=report.speaker,
            network=report.network,
            timestamp=now(),
        )
    )
    decoded = decode("consultation.dr-lee.pat-1", wire, "pat-1")
    assert isinstance(decoded, DeviceStatus)
    assert (decoded.camera, decoded.microphone, decoded.speaker, decoded.network) == (
        "skipped",
        "warn",
        "skipped",
        "unknown",
    )
