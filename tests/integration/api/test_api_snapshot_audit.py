"""A camera snapshot whose read the audit trail cannot record is refused 503 ``audit-unavailable``
(as a preview or a chat list is), not 500, and no picture is served."""

from __future__ import annotations

from pathlib import Path

import pytest

from devices import synthetic
from telehealth_client import events
from tests.support.api import KIOSK, Agents
from tests.support.devices import VIDEO_FRAMES, VIDEO_SIZE

pytestmark = pytest.mark.integration

CHECK_WAIT = 60.0  # the camera check decodes the generated video on a shared machine


async def test_a_snapshot_that_cannot_be_audited_is_503(agents: Agents, tmp_path: Path) -> None:
    width, height = VIDEO_SIZE
    video = synthetic.write_video(tmp_path / "normal.mkv", "normal", VIDEO_FRAMES, width, height)
    kiosk = await agents.start(KIOSK, TELEHEALTH_CAMERA=str(video))
    status, answer = await kiosk.api.post("/v1/device-checks", {"skip": ["microphone", "speaker"]})
    assert status == 202, answer
    check_id = answer["check"]["id"]
    await kiosk.wait_event(
        lambda e: isinstance(e, events.DeviceCheckFinished) and e.check_id == check_id, within=CHECK_WAIT
    )
    durable = kiosk.agent.durable
    assert durable is not None
    await durable.trail.aclose()  # nothing more can be recorded

    status, answer = await kiosk.api.get(f"/v1/device-checks/{check_id}/snapshot")
    assert status == 503, answer
    assert answer["error"] == "audit-unavailable" and "snapshot" in answer["message"], answer
