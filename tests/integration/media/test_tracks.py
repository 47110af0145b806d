"""The camera track on real OpenCV reading a generated video: the right frames in order, the newest
one after a stall (never a backlog), and a camera that cannot be opened reported and ended; a
preview of a decoded frame or a camera image is a small JPEG."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from aiortc.mediastreams import MediaStreamError

from telehealth_client.media.tracks import CameraTrack, encode_preview

from .numbered import read, write_numbered_video

pytestmark = pytest.mark.integration


async def test_the_camera_track_delivers_the_files_frames_in_order(tmp_path: Path) -> None:
    video = write_numbered_video(tmp_path / "numbered.mkv", frames=100)
    track = CameraTrack(str(video), is_file=True)
    try:
        numbers = [read(await asyncio.wait_for(track.recv(), 5.0)) for _ in range(20)]
    finally:
        await track.aclose()
    assert numbers == sorted(numbers) and len(set(numbers)) == 20
    assert 1 <= numbers[0] <= 100


async def test_a_camera_track_made_unopened_reads_nothing_until_opened_and_closes_either_way(
    tmp_path: Path,
) -> None:
    # A media child makes its tracks with the connection and opens the devices once its answer is
    # out: until then the camera is not touched (its light stays off, OpenCV holds no CPU).
    video = write_numbered_video(tmp_path / "numbered.mkv", frames=100)
    never = CameraTrack(str(video), is_file=True, open_now=False)
    await never.aclose()  # never opened: closes without a thread to wait for
    assert never.captured == 0
    track = CameraTrack(str(video), is_file=True, open_now=False)
    try:
        assert track.captured == 0 and not track.device.running
        track.device.open()
        track.device.open()  # twice is once
        assert track.device.running
        first = read(await asyncio.wait_for(track.recv(), 5.0))
    finally:
        await track.aclose()
    assert 1 <= first <= 100 and track.captured >= 1
    assert not track.device.running


async def test_a_slow_consumer_gets_the_newest_frame_not_a_backlog(tmp_path: Path) -> None:
    video = write_numbered_video(tmp_path / "numbered.mkv", frames=200)
    track = CameraTrack(str(video), is_file=True)
    try:
        before = read(await asyncio.wait_for(track.recv(), 5.0))
        captured_before = track.captured
        # The encoder is busy: the capture goes on meanwhile (wait for it by its own count).
        await asyncio.wait_for(track.wait_captured(captured_before + 15), 5.0)
        after = read(await asyncio.wait_for(track.recv(), 5.0))
    finally:
        await track.aclose()
    assert after - before >= 15  # the frames in between were skipped, not queued
    assert track.sent == 2


async def test_a_camera_that_cannot_be_opened_is_reported_and_ends_the_track(tmp_path: Path) -> None:
    failures: list[tuple[str, str]] = []
    track = CameraTrack(
        str(tmp_path / "missing.mkv"), is_file=True, on_failure=lambda k, r: failures.append((k, r))
    )
    try:
        with pytest.raises(MediaStreamError):
            await asyncio.wait_for(track.recv(), 5.0)
    finally:
        await track.aclose()
    assert failures == [("video", "the camera could not be opened")]
    assert track.readyState == "ended"


async def test_a_preview_is_a_jpeg_scaled_down_to_its_width(tmp_path: Path) -> None:
    import cv2
    import numpy as np

    video = write_numbered_video(tmp_path / "numbered.mkv", frames=60)
    track = CameraTrack(str(video), is_file=True)
    try:
        frame = await asyncio.wait_for(track.recv(), 5.0)
        await track.wait_captured(1)
        number, image = track.newest()
    finally:
        await track.aclose()
    assert number >= 1 and image is not None
    for source in (frame, image):
        jpeg = encode_preview(source, 160)
        assert jpeg is not None and jpeg.startswith(b"\xff\xd8")
        decoded = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
        assert decoded.shape[1] == 160 and decoded.shape[0] == frame.height * 160 // frame.width // 2 * 2
    # Never scaled up.
    assert (
        cv2.imdecode(np.frombuffer(encode_preview(image, 4096) or b"", np.uint8), cv2.IMREAD_COLOR).shape[:2]
        == image.shape[:2]
    )
