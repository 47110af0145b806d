"""The technician page (served by the agent's API at ``/``) in headless Chromium during a real
consultation: open without the token, it asks for it; then it shows the live state and the roster,
a chat message sent through the provider's API, the remote video (the screenshot of its region is
no blank picture) and that the preview is being watched. Every wait is the browser's own wait for
a condition. Between calls it shows the newest device check (each verdict and the camera
snapshot) and the newest preflight, found through their own routes."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from telehealth_client import events
from tests.support.api import (
    CONSULTATION,
    KIOSK,
    PATIENT,
    PROVIDER,
    Agents,
    RunningAgent,
    call_under_way,
)
from tests.support.media import devices_environment
from tests.support.technician_page import TechnicianPage

pytestmark = pytest.mark.integration

# A blank (black, or one flat colour) picture has no spread at all; the numbered test video has
# white digits on a dark ground, well above this.
MIN_PIXEL_STD = 8.0


@pytest.fixture
async def browser_page(kiosk_in_call: RunningAgent) -> AsyncIterator[TechnicianPage]:
    assert kiosk_in_call.agent.api is not None and kiosk_in_call.agent.api.address is not None
    page = await TechnicianPage.start(kiosk_in_call.agent.api.address)
    try:
        yield page
    finally:
        await page.close()


@pytest.fixture
async def call(agents: Agents, tmp_path: Path) -> tuple[RunningAgent, RunningAgent]:
    return await call_under_way(agents, lambda name: devices_environment(tmp_path, name))


@pytest.fixture
def kiosk_in_call(call: tuple[RunningAgent, RunningAgent]) -> RunningAgent:
    return call[0]


async def test_the_page_shows_a_consultation_live(
    call: tuple[RunningAgent, RunningAgent], browser_page: TechnicianPage
) -> None:
    kiosk, provider = call
    page = browser_page
    await page.open_with_token(kiosk.api.token)  # no token yet: the page asks for it

    # The live state and the roster, from GET /v1/status and the event stream.
    await page.wait_for('[data-testid="role"]', "patient")
    await page.wait_for('[data-testid="stream-status"]', "live")
    await page.wait_for('[data-testid="consultation-state"]', "in-progress")
    await page.wait_for(f'[data-testid="roster"] li[data-user-id="{PROVIDER}"]')
    await page.wait_for(f'[data-testid="roster"] li[data-user-id="{PATIENT}"]')
    await page.wait_for('[data-testid="call-status"]', "connected")
    assert "token" not in (await page.text('[data-testid="identity"]')).lower()

    # A chat message sent through the provider's API shows up.
    text = "Please look at the camera"
    status, answer = await provider.api.post(f"/v1/consultations/{CONSULTATION}/chat", {"text": text})
    assert status == 201, answer
    await page.wait_for('[data-testid="chat"] li', text)

    # The remote video: watched through the page, not blank, and shown as being watched.
    await page.do("click", selector='[data-testid="watch-remote"]')
    # At least three pictures shown (the page counts them in data-frames).
    await page.wait_for('#preview-remote[data-frames]:not([data-frames="1"]):not([data-frames="2"])')
    await page.wait_for('[data-testid="watched-remote"]', "being watched")
    await kiosk.wait_event(lambda e: isinstance(e, events.PreviewWatched) and e.watching)
    picture = await page.screenshot('[data-testid="preview-remote"]')
    grey = cv2.cvtColor(picture, cv2.COLOR_BGR2GRAY)
    assert grey.shape[0] > 100 and grey.shape[1] > 100, grey.shape
    assert float(np.std(grey)) > MIN_PIXEL_STD, float(np.std(grey))

    # Stopping the preview ends the watch, and the page says so.
    await page.do("click", selector='[data-testid="watch-remote"]')
    await kiosk.wait_event(lambda e: isinstance(e, events.PreviewWatched) and not e.watching)
    await page.wait_for('[data-testid="watched-remote"]', state="hidden")
    assert page.page_errors() == []


async def test_the_page_loads_without_the_token_and_opens_nothing_else(kiosk: RunningAgent) -> None:
    async with kiosk.api.session.get(kiosk.api.base + "/") as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/html")
        policy = response.headers["Content-Security-Policy"]
        assert "default-src 'none'" in policy and "connect-src 'self'" in policy
        html = await response.text()
    assert '<script src="/technician.js"' in html and "http" not in html.replace("http-equiv", "")
    for path, kind in (("/technician.js", "text/javascript"), ("/technician.css", "text/css")):
        async with kiosk.api.session.get(kiosk.api.base + path) as response:
            assert response.status == 200 and response.headers["Content-Type"].startswith(kind)
            assert "://" not in await response.text()  # nothing fetched from elsewhere
    # The API itself still needs the token, and only these files are open.
    assert (await kiosk.api.get("/v1/status", token=None))[0] == 401
    assert (await kiosk.api.get("/index.html", token=None))[0] == 401
    assert (await kiosk.api.call("POST", "/", token=None))[0] == 401


def check_finished(check_id: str) -> Callable[[object], bool]:
    return lambda e: isinstance(e, events.DeviceCheckFinished) and e.check_id == check_id


async def started_check(agent: RunningAgent, path: str, body: dict[str, Any]) -> str:
    status, answer = await agent.api.post(path, body)
    assert status == 202, answer
    return str(answer["check"]["id"])


async def test_the_page_shows_the_newest_device_check_with_its_snapshot_and_the_preflight(
    agents: Agents, tmp_path: Path
) -> None:
    # The generated camera (a numbered video); the microphone and speaker are skipped: PortAudio
    # reads the ALSA configuration once per process (test_api_devices checks them in a child).
    devices = devices_environment(tmp_path, "patient")
    kiosk = await agents.start(
        KIOSK,
        TELEHEALTH_CAMERA=devices["TELEHEALTH_CAMERA"],
        # The network's judgment is not under test here: the widest limits on a loaded machine.
        TELEHEALTH_PREFLIGHT_MEDIA_SECONDS="2",
        TELEHEALTH_PREFLIGHT_POOR_RTT_MS="10000",
        TELEHEALTH_PREFLIGHT_POOR_LOSS_PERCENT="100",
    )
    check_id = await started_check(kiosk, "/v1/device-checks", {"skip": ["microphone", "speaker"]})
    end = await kiosk.wait_event(check_finished(check_id), within=60.0)
    assert end.camera == "ok", end

    # Opened after the check: the page finds it through the status and its own route.
    assert kiosk.agent.api is not None and kiosk.agent.api.address is not None
    page = await TechnicianPage.start(kiosk.agent.api.address)
    try:
        await page.open_with_token(kiosk.api.token)
        shown = f'[data-testid="devices-check"][data-check-id="{check_id}"][data-state="done"]'
        await page.wait_for(f'{shown} li[data-device="camera"][data-status="ok"]', "camera: ok")
        await page.wait_for(f'{shown} li[data-device="microphone"][data-status="skipped"]')
        picture = await page.screenshot(f'{shown} [data-testid="snapshot"]')
        grey = cv2.cvtColor(picture, cv2.COLOR_BGR2GRAY)
        assert float(np.std(grey)) > MIN_PIXEL_STD, float(np.std(grey))

        # A preflight started while the page is open shows as its events arrive.
        preflight_id = await started_check(kiosk, "/v1/preflight", {"skip": ["devices"]})
        await kiosk.wait_event(check_finished(preflight_id), within=90.0)
        flown = f'[data-testid="preflight-check"][data-check-id="{preflight_id}"][data-state="done"]'
        await page.wait_for(f'{flown} [data-testid="network-verdict"]', "Network: video, passed")
        await page.wait_for(shown)  # the device check stays shown beside it
        assert page.page_errors() == []
    finally:
        await page.close()
