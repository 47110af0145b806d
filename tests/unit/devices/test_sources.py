from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from devices.sources import (
    CameraSource,
    DeviceUsageError,
    parse_audio_device,
    parse_camera_source,
    redact_url,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0", CameraSource("index", 0)),
        (" 3 ", CameraSource("index", 3)),
        ("/dev/video2", CameraSource("device", "/dev/video2")),
        ("rtsp://cam.local/stream", CameraSource("url", "rtsp://cam.local/stream")),
        ("clips/normal.mkv", CameraSource("file", "clips/normal.mkv")),
        ("camera-one", CameraSource("file", "camera-one")),
    ],
)
def test_camera_sources(text: str, expected: CameraSource) -> None:
    assert parse_camera_source(text) == expected


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("-1", "index must be a non-negative integer, got '-1'"),
        ("1.5", "index must be a non-negative integer, got '1.5'"),
        ("+2", "index must be a non-negative integer, got '+2'"),
        ("0x01", "index must be a non-negative integer, got '0x01'"),
        ("99999", "index 99999 is out of range (0-1023)"),
        ("", "must not be empty"),
        ("   ", "must not be empty"),
        ("a\x00b", "contains a NUL character"),
        ("http:///no-host", "URL has no host: 'http:///no-host'"),
    ],
)
def test_malformed_camera_sources_name_the_field_and_reason(text: str, reason: str) -> None:
    with pytest.raises(DeviceUsageError) as caught:
        parse_camera_source(text)
    assert caught.value.field == "camera"
    assert caught.value.reason == reason
    assert str(caught.value) == f"camera: {reason}"


def test_audio_devices_are_indexes_or_names() -> None:
    assert parse_audio_device("2", "microphone") == 2
    assert parse_audio_device(" USB Audio ", "microphone") == "USB Audio"
    with pytest.raises(DeviceUsageError, match="speaker: index must be a non-negative integer"):
        parse_audio_device("-1", "speaker")


@given(st.text(max_size=40))
@settings(derandomize=True, database=None)
def test_any_text_parses_or_is_a_usage_error(text: str) -> None:
    try:
        source = parse_camera_source(text)
    except DeviceUsageError as error:
        assert error.field == "camera" and error.reason
    else:
        assert source.kind != "index" or (isinstance(source.target, int) and source.target >= 0)


def test_urls_lose_credentials_query_and_fragment() -> None:
    assert redact_url("rtsp://admin:hunter2@10.0.0.5:554/live?token=x#frag") == "rtsp://10.0.0.5:554/live"
    assert parse_camera_source("http://u:p@cam/feed").label == "http://cam/feed"
    assert redact_url("http://[::1") == "<unparsable URL>"
