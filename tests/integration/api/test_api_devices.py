"""Device checks and the preflight through the local API on real agents: a check runs in the
background, one at a time (409 while one runs or while a call may hold the devices), tells each
verdict on the event stream, and ends with its report; the camera snapshot is a JPEG whose every
read is in the audit trail (PHI_FILE_ACCESSED); the whole check on the ALSA file devices and a
generated video runs in ``telehealth-agent run`` (PortAudio reads the ALSA configuration once per
process); the preflight judges the network through the stack's TURN server."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import cv2
import numpy as np
import pytest

from devices import synthetic
from telehealth_client import events
from telehealth_client.protocol.messages import ConsultationState
from telehealth_devstack.stack import DevStack
from tests.support.api import (
    CHECK_IN,
    CONSULTATION,
    KIOSK,
    PROVIDER,
    WAIT,
    Agents,
    RunningAgent,
    record_consent,
)
from tests.support.audit import sink_events
from tests.support.cli import AGENT, Process
from tests.support.devices import VIDEO_FRAMES, VIDEO_SIZE

pytestmark = pytest.mark.integration

ONLY_CAMERA = {"skip": ["microphone", "speaker"]}


@pytest.fixture
def video(tmp_path: Path) -> Path:
    width, height = VIDEO_SIZE
    return synthetic.write_video(tmp_path / "normal.mkv", "normal", VIDEO_FRAMES, width, height)


def finished(check_id: str) -> Any:
    return lambda e: isinstance(e, events.DeviceCheckFinished) and e.check_id == check_id


async def started(agent: RunningAgent, path: str, body: dict[str, Any]) -> str:
    status, answer = await agent.api.post(path, body)
    assert status == 202, answer
    check = answer["check"]
    assert check["state"] == "running" and check["finishedAt"] is None, check
    return str(check["id"])


class HeldCamera:
    """A stream URL whose server takes the connection and answers nothing until released: a camera
    check on it stays running (OpenCV waits in its worker thread) for as long as the test needs."""

    def __init__(self) -> None:
        self.connected = asyncio.Event()
        self._release = asyncio.Event()
        self._server: asyncio.Server | None = None
        self.url = ""

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._hold, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}/camera.mjpg"

    async def _hold(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connected.set()
        await self._release.wait()
        writer.close()

    def release(self) -> None:
        self._release.set()

    async def aclose(self) -> None:
        self.release()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


@pytest.fixture
async def held_camera() -> AsyncIterator[HeldCamera]:
    camera = HeldCamera()
    await camera.start()
    try:
        yield camera
    finally:
        await camera.aclose()


async def test_a_check_runs_in_the_background_one_at_a_time(agents: Agents, held_camera: HeldCamera) -> None:
    kiosk = await agents.start(
        KIOSK,
        TELEHEALTH_CAMERA=held_camera.url,
        TELEHEALTH_DEVICE_THRESHOLDS=json.dumps({"camera": {"deadline_s": 30}}),
    )
    check_id = await started(kiosk, "/v1/device-checks", ONLY_CAMERA)
    await asyncio.wait_for(held_camera.connected.wait(), WAIT)  # the camera is being opened

    status, answer = await kiosk.api.get(f"/v1/device-checks/{check_id}")
    assert status == 200
    progress = answer["check"]
    assert (progress["state"], progress["steps"], progress["report"], progress["snapshot"]) == (
        "running",
        [],
        None,
        False,
    )
    assert progress["skip"] == ["microphone", "speaker"]
    _, state = await kiosk.api.get("/v1/status")
    assert state["devices"] == {
        "checkId": check_id,
        "state": "running",
        "camera": "pending",
        "microphone": "skipped",
        "speaker": "skipped",
        "network": None,
    }
    # One at a time: another check, a preflight, the snapshot of the running one.
    for path, body in (("/v1/device-checks", {}), ("/v1/preflight", {"skip": ["devices"]})):
        status, answer = await kiosk.api.post(path, body)
        assert (status, answer["error"], answer["state"]) == (409, "check-running", "running"), answer
        assert check_id in answer["message"]
    status, answer = await kiosk.api.get(f"/v1/device-checks/{check_id}/snapshot")
    assert (status, answer["error"], answer["state"]) == (409, "check-running", "running")

    held_camera.release()  # the stream ends unanswered: the camera fails
    end = await kiosk.wait_event(finished(check_id), within=60.0)
    assert (end.check, end.status, end.camera, end.microphone, end.speaker, end.error) == (
        "devices",
        "fail",
        "fail",
        "skipped",
        "skipped",
        None,
    )
    [step] = [e for e in kiosk.seen.items if isinstance(e, events.DeviceChecked) and e.check_id == check_id]
    assert (step.device, step.status) == ("camera", "fail")
    status, answer = await kiosk.api.get(f"/v1/device-checks/{check_id}")
    check = answer["check"]
    assert (status, check["state"], check["snapshot"]) == (200, "done", False)
    assert [(s["kind"], s["status"]) for s in check["steps"]] == [("camera", "fail")]
    assert check["report"]["camera"]["reasons"] == ["camera stream cannot be opened"]
    assert check["report"]["microphone"] is None
    status, answer = await kiosk.api.get(f"/v1/device-checks/{check_id}/snapshot")
    assert (status, answer["error"]) == (404, "no-snapshot")
    # Over: the next one may start.
    assert (await kiosk.api.post("/v1/device-checks", ONLY_CAMERA))[0] == 202


async def test_a_camera_check_on_generated_video_and_its_audited_snapshot(
    agents: Agents, video: Path, stack: DevStack
) -> None:
    kiosk = await agents.start(KIOSK, TELEHEALTH_CAMERA=str(video))
    check_id = await started(kiosk, "/v1/device-checks", ONLY_CAMERA)
    end = await kiosk.wait_event(finished(check_id), within=60.0)
    assert (end.status, end.camera) == ("ok", "ok"), end

    status, answer = await kiosk.api.get(f"/v1/device-checks/{check_id}")
    check = answer["check"]
    assert (status, check["state"], check["snapshot"], check["error"]) == (200, "done", True, None)
    camera = check["report"]["camera"]
    width, height = VIDEO_SIZE
    assert (camera["status"], camera["width"], camera["height"], camera["frames_read"]) == (
        "ok",
        width,
        height,
        30,
    )
    assert camera["device"] == str(video)
    assert "snapshot_jpeg" not in camera

    async with kiosk.api.session.get(
        f"{kiosk.api.base}/v1/device-checks/{check_id}/snapshot", headers=kiosk.api.headers()
    ) as response:
        assert response.status == 200
        assert response.headers["Content-Type"] == "image/jpeg"
        assert response.headers["Cache-Control"] == "no-store"
        jpeg = await response.read()
    image = cv2.imdecode(np.frombuffer(jpeg, dtype=np.uint8), cv2.IMREAD_COLOR)
    assert image is not None and image.shape == (height, width, 3)  # the settings' snapshot width: 320

    # The read is in the audit trail (recorded before the answer), the kiosk's own ID as actor.
    assert kiosk.agent.durable is not None
    assert await kiosk.agent.durable.trail.wait_delivered(WAIT)
    [read] = [e for e in await sink_events(stack) if e["eventType"] == "PHI_FILE_ACCESSED"]
    assert read["resource"]["type"] == "camera-snapshot" and read["resource"]["id"] == check_id
    assert (read["actor"]["userId"], read["action"], read["outcome"]) == (KIOSK, "read", "success")
    assert read["metadata"] == {"via": "local-api"}

    # Only the newest check of each kind is kept.
    newer = await started(kiosk, "/v1/device-checks", ONLY_CAMERA)
    await kiosk.wait_event(finished(newer), within=60.0)
    for path in (f"/v1/device-checks/{check_id}", f"/v1/device-checks/{check_id}/snapshot"):
        status, answer = await kiosk.api.get(path)
        assert (status, answer["error"]) == (404, "unknown-check")


async def test_bad_requests_are_422_naming_the_field_and_unknown_checks_404(kiosk: RunningAgent) -> None:
    cases: list[tuple[str, Any, str]] = [
        ("/v1/device-checks", {"skip": ["camera", "microphone", "speaker"]}, "skip"),
        ("/v1/device-checks", {"skip": ["lens"]}, "skip.0"),
        ("/v1/device-checks", {"skip": "camera"}, "skip"),
        ("/v1/device-checks", {"cameras": []}, "cameras"),
        ("/v1/preflight", {"skip": ["network"]}, "skip.0"),
    ]
    for path, body, field in cases:
        status, answer = await kiosk.api.post(path, body)
        assert (status, answer["error"]) == (422, "invalid-body"), (body, answer)
        assert field in [problem["field"] for problem in answer["fields"]], (body, answer)
    for path in ("/v1/device-checks/devchk-0", "/v1/device-checks/devchk-0/snapshot", "/v1/preflight/x"):
        status, answer = await kiosk.api.get(path)
        assert (status, answer["error"]) == (404, "unknown-check"), path
    _, state = await kiosk.api.get("/v1/status")
    assert state["devices"] is None  # nothing was started


async def test_no_check_while_a_call_may_hold_the_devices(
    kiosk: RunningAgent, provider: RunningAgent, stack: DevStack
) -> None:
    await record_consent(stack)
    assert (await kiosk.api.post("/v1/check-in", CHECK_IN))[0] == 201
    await provider.seen.until(
        lambda: any(p.consultation_id == CONSULTATION for p in provider.agent.provider.queue)  # type: ignore[union-attr]
    )
    assert (await provider.api.post(f"/v1/consultations/{CONSULTATION}/join"))[0] == 200
    await kiosk.wait_state(ConsultationState.CONNECTING)
    await provider.wait_state(ConsultationState.CONNECTING)
    for agent in (kiosk, provider):
        for path, body in (("/v1/device-checks", {}), ("/v1/preflight", {"skip": ["devices"]})):
            status, answer = await agent.api.post(path, body)
            assert (status, answer["error"], answer["state"]) == (409, "in-call", "connecting"), answer
        _, state = await agent.api.get("/v1/status")
        assert state["devices"] is None


async def test_a_preflight_through_the_api_judges_the_network(agents: Agents) -> None:
    # What the API carries is under test here, not the judgment (its rules are tested at their
    # boundaries in tests/unit): loopback on a machine other tests load can see round trips and loss
    # over the default "poor" limits, so these limits are the settings' widest.
    kiosk = await agents.start(
        KIOSK,
        TELEHEALTH_PREFLIGHT_MEDIA_SECONDS="2",
        TELEHEALTH_PREFLIGHT_POOR_RTT_MS="10000",
        TELEHEALTH_PREFLIGHT_POOR_LOSS_PERCENT="100",
    )
    check_id = await started(kiosk, "/v1/preflight", {"skip": ["devices"]})
    assert check_id.startswith("preflight-")
    end = await kiosk.wait_event(finished(check_id), within=90.0)
    status, answer = await kiosk.api.get(f"/v1/preflight/{check_id}")
    check = answer["check"]
    assert (end.check, end.network, end.camera, end.error) == ("preflight", "video", "skipped", None), check
    assert (status, check["kind"], check["state"], check["passed"], check["report"]) == (
        200,
        "preflight",
        "done",
        True,
        None,
    )
    assert check["network"]["verdict"] == "video"
    assert [c["name"] for c in check["network"]["checks"]] == [
        "signaling",
        "turn-credentials",
        "turn-allocation",
        "media",
    ]
    _, state = await kiosk.api.get("/v1/status")
    assert (state["devices"]["checkId"], state["devices"]["network"]) == (check_id, "video")
    # A preflight is not a device check: its ID names no device check.
    assert (await kiosk.api.get(f"/v1/device-checks/{check_id}"))[0] == 404


async def test_the_whole_check_on_alsa_file_devices_in_telehealth_agent_run(
    stack: DevStack, tmp_path: Path, video: Path
) -> None:
    tone = synthetic.write_pcm(tmp_path / "tone.raw", "tone")
    alsa = synthetic.write_alsa_config(tmp_path / "alsa", tone)
    environment = {
        **_clean_environment(),
        **stack.agent_environment(KIOSK),
        **alsa.env,
        "TELEHEALTH_STATE_DIR": str(tmp_path / "kiosk"),
        "TELEHEALTH_API_PORT": "0",
        "TELEHEALTH_MEDIA": "false",
        "TELEHEALTH_CAMERA": str(video),
        "TELEHEALTH_MICROPHONE": str(alsa.microphone),
        "TELEHEALTH_SPEAKER": str(alsa.speaker),
    }
    token = environment["TELEHEALTH_API_TOKEN"]
    proc = await asyncio.create_subprocess_exec(
        *AGENT, "run", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=environment
    )
    agent = Process(proc)
    try:
        line = await agent.next_line("local api listening address=", within=30.0)
        match = re.search(r"address=(http://127\.0\.0\.1:\d+)", line)
        assert match, line
        base, headers = match.group(1), {"Authorization": f"Bearer {token}"}
        async with (
            aiohttp.ClientSession(headers=headers, timeout=aiohttp.ClientTimeout(total=90)) as session,
            session.get(f"{base}/v1/events") as stream,
        ):
            assert (await stream.content.readline()).startswith(b": live events follow")
            async with session.post(f"{base}/v1/device-checks", json={}) as response:
                assert response.status == 202
                check_id = (await response.json())["check"]["id"]
            told = await _until_finished(stream, check_id)
            async with session.get(f"{base}/v1/device-checks/{check_id}") as response:
                check = (await response.json())["check"]
            async with session.get(f"{base}/metrics") as response:
                metrics = await response.text()
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        code, _, err = await agent.finish(within=30.0)
    assert code == 0, err
    # The camera is checked beside the microphone and then the speaker: each told once, as it ends.
    assert sorted((e["device"], e["status"]) for e in told["steps"]) == [
        ("camera", "ok"),
        ("microphone", "ok"),
        ("speaker", "ok"),
    ], told
    end = told["end"]
    assert (end["camera"], end["microphone"], end["speaker"]) == ("ok", "ok", "ok"), (end, check)
    report = check["report"]
    assert report["microphone"]["device"] and report["microphone"]["rms_dbfs"] is not None
    assert report["speaker"]["played_frames"] > 0
    assert 'telehealth_device_verdict{device="speaker",verdict="ok"} 1.0' in metrics


async def _until_finished(stream: aiohttp.ClientResponse, check_id: str) -> dict[str, Any]:
    """Read the event stream until the check's end: its steps and its end, as sent."""
    steps: list[dict[str, Any]] = []
    kind = None
    while True:
        raw = await stream.content.readline()
        assert raw, "the event stream ended"
        line = raw.decode().rstrip("\n")
        if line.startswith("event: "):
            kind = line.removeprefix("event: ")
        elif line.startswith("data: "):
            data = json.loads(line.removeprefix("data: "))
            if data.get("check_id") != check_id:
                continue
            if kind == "device-checked":
                steps.append(data)
            elif kind == "device-check-finished":
                return {"steps": steps, "end": data}


def _clean_environment() -> dict[str, str]:
    base = {key: value for key, value in os.environ.items() if not key.startswith(("TELEHEALTH_", "ALSA_"))}
    base.pop("NOTIFY_SOCKET", None)
    return base


async def test_a_providers_cart_checks_its_devices_too(agents: Agents, video: Path) -> None:
    provider = await agents.start(PROVIDER, TELEHEALTH_CAMERA=str(video))
    check_id = await started(provider, "/v1/device-checks", ONLY_CAMERA)
    end = await provider.wait_event(finished(check_id), within=60.0)
    assert (end.status, end.camera) == ("ok", "ok")
    # The consent read is a kiosk's: 409 naming the role, nothing asked of the clinic.
    status, answer = await provider.api.post(
        "/v1/consent/read", {"patientId": "pat-1", "providerId": PROVIDER}
    )
    assert (status, answer["error"], answer["role"]) == (409, "wrong-role", "provider")
