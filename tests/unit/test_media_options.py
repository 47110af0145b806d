"""The media child's devices from the settings: on by default, the camera source or the first
/dev/videoN, files played as test patterns, ALSA's default audio devices unless named."""

from pathlib import Path

from telehealth_client.config import load_settings
from telehealth_client.media.options import first_camera, is_file_source, media_options


def settings(**env: str):  # type: ignore[no-untyped-def]
    return load_settings(None, environ={f"TELEHEALTH_{k.upper()}": v for k, v in env.items()})


def test_media_is_on_by_default_with_the_named_devices() -> None:
    options = media_options(settings(camera="/tmp/pattern.mkv", microphone="USB Mic", speaker="2"))
    assert options is not None
    devices = options.devices
    assert (devices.camera, devices.camera_is_file) == ("/tmp/pattern.mkv", True)
    assert (devices.microphone, devices.speaker, devices.relay_only) == ("USB Mic", "2", True)


def test_media_off_means_no_call_and_relay_only_follows_its_setting() -> None:
    assert media_options(settings(media="false")) is None
    options = media_options(settings(camera="/dev/video2", relay_only="false"))
    assert options is not None
    assert (options.devices.camera, options.devices.camera_is_file, options.devices.relay_only) == (
        "/dev/video2",
        False,
        False,
    )


def test_unnamed_audio_devices_are_alsas_default() -> None:
    options = media_options(settings(camera="0"))
    assert options is not None
    assert (options.devices.microphone, options.devices.speaker) == ("default", "default")
    assert options.devices.camera_is_file is False


def test_the_first_camera_is_the_lowest_numbered_video_device(tmp_path: Path) -> None:
    assert first_camera(tmp_path) is None
    for name in ("video10", "video2", "video0x", "vbi0"):
        (tmp_path / name).touch()
    assert first_camera(tmp_path) == str(tmp_path / "video2")


def test_what_counts_as_a_file_source() -> None:
    assert is_file_source("/srv/pattern.mkv") and is_file_source("pattern.avi")
    assert not any(is_file_source(s) for s in ("/dev/video0", "3", "rtsp://cam/stream", "http://x/y"))
