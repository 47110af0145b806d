"""An idle kiosk's ``telehealth-agent run`` carries only what it uses (issue 24: idle RSS under
80 MB, READY under 1 s; the numbers are scripts/bench_agent.py's, this keeps what they rest on).

Once READY, and after its API answered, the real process on the development stack has mapped none
of the native libraries that only a device check (numpy, OpenCV, PortAudio), a call (aiortc,
PyAV: the media child's), a sealed record (cryptography's AES-GCM) or a bus in use (the PubNub
SDK's crypto) needs. The import-level rule is tests/unit/test_media_imports.py; this one also
covers what the start itself runs (the settings, the outbox and audit trail opened, the API
built)."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest

from telehealth_devstack.stack import DevStack
from tests.support.api import KIOSK
from tests.support.cli import clean_environment, notified, notify_socket
from tests.support.notify import Agents, free_port

pytestmark = pytest.mark.integration

# A path fragment of each library's native modules, as /proc/PID/maps shows them.
NOT_AT_IDLE = {
    "numpy": "/numpy/",
    "OpenCV": "/cv2/",
    "PyAV": "/av/",
    "aiortc": "/aiortc/",
    "PortAudio": "portaudio",
    "cryptography": "/cryptography/hazmat/bindings/",
    "PyCryptodome": "/Cryptodome/",  # the PubNub SDK's crypto: the bus is not used while idle
}
ALWAYS = {"pydantic": "/pydantic_core/", "aiohttp": "/aiohttp/"}  # what proves the maps were read


def mapped(pid: int, libraries: dict[str, str]) -> set[str]:
    """Which of ``libraries`` (name: path fragment) the process ``pid`` has mapped now."""
    maps = Path(f"/proc/{pid}/maps").read_text()
    return {name for name, fragment in libraries.items() if fragment in maps}


async def test_an_idle_kiosk_maps_no_device_call_or_sealing_library(tmp_path: Path, agents: Agents) -> None:
    notify_path = tmp_path / "notify.sock"
    async with DevStack(kiosks=(KIOSK,)) as stack:
        with notify_socket(notify_path) as notify:
            environment = clean_environment(
                {
                    **stack.agent_environment(KIOSK),
                    "TELEHEALTH_API_PORT": str(port := free_port()),
                    "NOTIFY_SOCKET": str(notify_path),
                }
            )
            process = await agents.run(environment)
            await notified(notify, b"READY=1", within=30.0)
            pid = process.process.pid
            assert mapped(pid, NOT_AT_IDLE) == set()
            headers = {"Authorization": f"Bearer {environment['TELEHEALTH_API_TOKEN']}"}
            async with aiohttp.ClientSession(headers=headers) as http:
                for path in ("/v1/health", "/v1/status", "/metrics"):
                    async with http.get(f"http://127.0.0.1:{port}{path}") as answer:
                        assert answer.status == 200, (path, await answer.text())
            assert mapped(pid, NOT_AT_IDLE) == set()
            assert mapped(pid, ALWAYS) == set(ALWAYS)
