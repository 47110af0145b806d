"""``telehealth-agent preflight`` as a process against the real development stack."""

from __future__ import annotations

import json
from pathlib import Path

from devices import synthetic
from telehealth_devstack.stack import DevStack
from tests.support.cli import AGENT, Process, unset_environment
from tests.support.preflight import kiosk_environment

WITHIN = 60.0


async def preflight(environment: dict[str, str], *arguments: str) -> tuple[int, str, str]:
    process = await Process.spawn(*AGENT, "preflight", *arguments, env={**unset_environment(), **environment})
    return await process.finish(WITHIN)


async def test_json_report_with_video_exits_0(stack: DevStack) -> None:
    environment = kiosk_environment(stack, TELEHEALTH_PREFLIGHT_MEDIA_SECONDS="1")

    code, out, err = await preflight(environment, "--json", "--skip", "devices")

    assert code == 0, err
    report = json.loads(out)
    assert report["passed"] is True
    assert report["network"]["verdict"] == "video"
    assert [check["name"] for check in report["network"]["checks"]] == [
        "signaling",
        "turn-credentials",
        "turn-allocation",
        "media",
    ]
    assert report["network"]["metrics"]["video_back"] is True
    assert report["devices"] is None
    assert report["deviceStatus"]["network"] == "video"
    secrets = [
        environment[f"TELEHEALTH_{name}"] for name in ("DEVICE_CREDENTIAL", "CIPHER_KEY", "SUBSCRIBE_KEY")
    ]
    assert not any(secret in out + err for secret in secrets)


async def test_turn_down_prints_cannot_connect_with_the_reason_and_exits_1(stack: DevStack) -> None:
    await stack.turn.stop()

    code, out, _ = await preflight(kiosk_environment(stack), "--skip", "devices")

    assert code == 1
    lines = out.splitlines()
    assert "turn-allocation   FAIL  TURN server unreachable" in lines
    assert "network           CANNOT-CONNECT" in lines
    assert lines[-1].startswith("preflight: FAIL (") and lines[-1].endswith("network cannot-connect)")


async def test_bad_threshold_or_missing_credential_is_a_usage_error_naming_it(stack: DevStack) -> None:
    environment = kiosk_environment(stack, TELEHEALTH_PREFLIGHT_POOR_RTT_MS="-5")
    code, out, err = await preflight(environment, "--skip", "devices")
    assert (code, out) == (2, "")
    assert "preflight_poor_rtt_ms (TELEHEALTH_PREFLIGHT_POOR_RTT_MS): Input should be greater than 0" in err

    environment = kiosk_environment(stack)
    del environment["TELEHEALTH_DEVICE_CREDENTIAL"]
    code, out, err = await preflight(environment, "--skip", "devices")
    assert (code, out) == (2, "")
    assert "device_credential: not set" in err


async def test_devices_and_network_in_one_report_a_failing_camera_fails_it(
    stack: DevStack, tmp_path: Path
) -> None:
    dark = synthetic.write_video(tmp_path / "dark.mkv", "dark", 40, 320, 240)
    environment = kiosk_environment(
        stack, TELEHEALTH_CAMERA=str(dark), TELEHEALTH_PREFLIGHT_MEDIA_SECONDS="1"
    )

    code, out, err = await preflight(environment, "--json", "--skip", "microphone", "--skip", "speaker")

    assert code == 1, err
    report = json.loads(out)
    assert report["passed"] is False
    assert report["devices"]["camera"]["status"] == "fail"
    assert report["network"]["verdict"] == "video"
    assert report["deviceStatus"] == {
        "camera": "fail",
        "microphone": "skipped",
        "speaker": "skipped",
        "network": "video",
    }
