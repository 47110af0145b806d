"""Microphone and speaker checks through real sounddevice/PortAudio on ALSA file devices.

Each test runs the CLI in a child process with ALSA_CONFIG_PATH pointing at a
generated configuration: the microphone replays a generated PCM file, the
speaker's output is written to a file that a monitor capture device reads
back, so the tone travels through ALSA both ways.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from devices import synthetic
from tests.support.devices import MakeAlsa, RunCli

pytestmark = pytest.mark.integration

AUDIO_ONLY = ("--skip", "camera", "--json")
MIC_ONLY = ("--skip", "camera", "--skip", "speaker", "--json")


@pytest.mark.parametrize(("kind", "level"), [("tone", -20.0), ("tone", -6.0), ("noise", -40.0)])
def test_signal_passes_with_the_generated_level(
    make_alsa: MakeAlsa, run_cli: RunCli, kind: synthetic.PcmKind, level: float
) -> None:
    alsa = make_alsa(kind, level_dbfs=level)
    done = run_cli("--microphone", synthetic.MICROPHONE, *MIC_ONLY, alsa=alsa)
    assert done.code == 0, done.stderr
    mic = done.report()["microphone"]
    assert mic["status"] == "ok", mic["reasons"]
    assert mic["device"] == synthetic.MICROPHONE
    assert mic["rms_dbfs"] == pytest.approx(level, abs=0.5)
    assert mic["frames"] == 24_000 and mic["samplerate"] == 48_000
    assert mic["silent"] is False and mic["clipping_ratio"] == 0.0
    if kind == "tone":
        assert mic["peak_dbfs"] == pytest.approx(level + 3.01, abs=0.5)


@pytest.mark.parametrize(
    ("kind", "reason"),
    [
        ("silence", "microphone silent"),
        ("clipped", "input clipping"),
        ("dc", "large DC offset: faulty input"),
    ],
)
def test_bad_input_fails_for_the_right_reason(
    make_alsa: MakeAlsa, run_cli: RunCli, kind: synthetic.PcmKind, reason: str
) -> None:
    done = run_cli("--microphone", synthetic.MICROPHONE, *MIC_ONLY, alsa=make_alsa(kind))
    assert done.code == 1, done.stderr
    mic = done.report()["microphone"]
    assert mic["status"] == "fail"
    assert mic["reasons"][0] == reason


def test_default_devices_are_used_when_none_is_named(make_alsa: MakeAlsa, run_cli: RunCli) -> None:
    done = run_cli(*AUDIO_ONLY, alsa=make_alsa("tone"))
    assert done.code == 0, done.stderr
    report = done.report()
    assert report["microphone"]["device"] == "default"
    assert report["microphone"]["rms_dbfs"] == pytest.approx(-20.0, abs=0.5)
    assert report["speaker"]["device"] == "default"
    assert report["speaker"]["heard"] is None  # nothing listens: played, not confirmed


def test_no_configured_device_gives_clear_verdicts(make_alsa: MakeAlsa, run_cli: RunCli) -> None:
    done = run_cli(*AUDIO_ONLY, alsa=make_alsa(None, speaker=False))
    assert done.code == 1, done.stderr
    report = done.report()
    assert report["microphone"]["reasons"] == ["no input device"]
    assert report["speaker"]["reasons"] == ["no output device"]


def test_unknown_names_and_indexes_are_verdicts(make_alsa: MakeAlsa, run_cli: RunCli) -> None:
    alsa = make_alsa("tone")
    done = run_cli("--microphone", "no-such-mic", "--speaker", "42", *AUDIO_ONLY, alsa=alsa)
    assert done.code == 1, done.stderr
    report = done.report()
    assert report["microphone"]["reasons"] == ["no input device matching 'no-such-mic'"]
    assert report["speaker"]["reasons"] == ["no audio device with index 42"]


def test_ambiguous_name_is_a_verdict(make_alsa: MakeAlsa, run_cli: RunCli) -> None:
    done = run_cli("--microphone", "kiosk", *MIC_ONLY, alsa=make_alsa("tone"))
    assert done.code == 1
    assert done.report()["microphone"]["reasons"] == ["'kiosk' matches more than one input device"]


@pytest.mark.parametrize(
    ("args", "field", "words"),
    [
        (("--microphone", "-1"), "--microphone", "non-negative integer"),
        (("--microphone", "1.5"), "--microphone", "non-negative integer"),
        (("--speaker", ""), "--speaker", "must not be empty"),
        (("--speaker-monitor", "0x10"), "--speaker-monitor", "non-negative integer"),
    ],
)
def test_malformed_arguments_are_usage_errors(
    make_alsa: MakeAlsa, run_cli: RunCli, args: tuple[str, str], field: str, words: str
) -> None:
    done = run_cli(*args, "--skip", "camera", alsa=make_alsa("tone"))
    assert done.code == 2
    assert f"argument {field}" in done.stderr and words in done.stderr
    assert "Traceback" not in done.stderr


def test_speaker_tone_is_heard_through_the_loopback(make_alsa: MakeAlsa, run_cli: RunCli) -> None:
    alsa = make_alsa("tone")
    args = ("--speaker", synthetic.SPEAKER, "--speaker-monitor", synthetic.MONITOR, "--skip", "microphone")
    done = run_cli(*args, *AUDIO_ONLY, alsa=alsa)
    assert done.code == 0, done.stderr
    speaker = done.report()["speaker"]
    assert speaker["status"] == "ok", speaker["reasons"]
    assert speaker["heard"] is True
    assert speaker["detected_hz"] == pytest.approx(1500, abs=30)
    # The tone is played at -12 dBFS peak: -15.05 dBFS RMS arrives if nothing was lost on the way.
    assert speaker["tone_level_dbfs"] == pytest.approx(-15.05, abs=0.5)
    assert speaker["heard_s"] >= 0.25
    # What the monitor heard really went through ALSA: the playback device wrote every frame.
    assert alsa.played is not None
    assert alsa.played.stat().st_size == speaker["played_frames"] * 2


def test_speaker_fails_when_the_monitor_hears_something_else(make_alsa: MakeAlsa, run_cli: RunCli) -> None:
    # The microphone replays a 1 kHz tone, not the speaker's 1.5 kHz one.
    alsa = make_alsa("tone")
    args = ("--speaker", synthetic.SPEAKER, "--speaker-monitor", synthetic.MICROPHONE, "--skip", "microphone")
    done = run_cli(*args, *AUDIO_ONLY, alsa=alsa)
    assert done.code == 1, done.stderr
    speaker = done.report()["speaker"]
    assert speaker["heard"] is False
    assert speaker["reasons"] == [f"speaker tone not heard on {synthetic.MICROPHONE}"]


def test_full_check_prints_each_step_then_a_summary(
    make_alsa: MakeAlsa, run_cli: RunCli, videos: dict[str, object]
) -> None:
    alsa = make_alsa("tone")
    args = ("--camera", str(videos["normal"]), "--microphone", synthetic.MICROPHONE)
    done = run_cli(*args, "--speaker", synthetic.SPEAKER, "--speaker-monitor", synthetic.MONITOR, alsa=alsa)
    assert done.code == 0, done.stderr
    lines = done.stdout.splitlines()
    kinds = sorted(line.split()[0] for line in lines[:-1])
    assert kinds == ["camera", "microphone", "speaker"]
    assert all(line.split()[1] == "OK" for line in lines[:-1])
    assert lines[-1].startswith("summary: OK in ")


def test_full_check_with_a_failing_device_exits_1(
    make_alsa: MakeAlsa, run_cli: RunCli, videos: dict[str, object]
) -> None:
    alsa = make_alsa("silence")
    done = run_cli("--camera", str(videos["dark"]), "--microphone", synthetic.MICROPHONE, alsa=alsa)
    assert done.code == 1, done.stderr
    summary = done.stdout.splitlines()[-1]
    assert summary.startswith("summary: FAIL")
    assert "camera: image too dark" in summary and "microphone: microphone silent" in summary


def test_device_list_names_cameras_inputs_and_outputs(make_alsa: MakeAlsa, run_cli: RunCli) -> None:
    done = run_cli("--list", "--json", alsa=make_alsa("tone"))
    assert done.code == 0, done.stderr
    listed = done.report()
    assert listed["audio_error"] is None
    inputs = {device["name"]: device for device in listed["inputs"]}
    assert {synthetic.MICROPHONE, synthetic.MONITOR, "default"} <= set(inputs)
    assert "null" not in inputs  # the hidden slave of every synthetic device
    assert inputs["default"]["is_default_input"] is True
    assert inputs[synthetic.MICROPHONE]["is_default_input"] is False
    assert synthetic.SPEAKER in {device["name"] for device in listed["outputs"]}
    assert all(camera["path"].startswith("/dev/video") for camera in listed["cameras"])


def test_device_list_as_text_says_when_nothing_is_found(make_alsa: MakeAlsa, run_cli: RunCli) -> None:
    done = run_cli("--list", alsa=make_alsa("tone"))
    assert done.code == 0, done.stderr
    lines = done.stdout.splitlines()
    inputs = lines[lines.index("audio inputs:") + 1 : lines.index("audio outputs:")]
    assert any(synthetic.MICROPHONE in line for line in inputs)
    cameras = lines[lines.index("cameras:") + 1 : lines.index("audio inputs:")]
    has_cameras = any(Path("/dev").glob("video*"))
    assert (cameras == ["  none found"]) is not has_cameras


def test_a_few_clipped_samples_give_the_near_clipping_warning(tmp_path: Path, run_cli: RunCli) -> None:
    # A clean tone with one sample in 200 at full scale: 0.5 % clipped, between the default
    # warning (0.1 %) and failure (1 %) shares.
    samples = synthetic.pcm_samples("tone", 2.0, level_dbfs=-20.0)
    samples[::200] = 32767
    pcm = tmp_path / "near-clipping.raw"
    samples.astype("<i2").tofile(pcm)
    alsa = synthetic.write_alsa_config(tmp_path / "alsa", pcm)
    done = run_cli("--microphone", synthetic.MICROPHONE, *MIC_ONLY, alsa=alsa)
    assert done.code == 0, done.stderr
    mic = done.report()["microphone"]
    assert mic["clipping_ratio"] == pytest.approx(0.005, abs=0.0005)
    assert mic["status"] == "warn"
    assert mic["reasons"] == ["input close to clipping"]
