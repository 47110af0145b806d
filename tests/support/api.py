"""For tests/integration/api: real agents with their local API on the real development stack
(relay enforcing Access Manager, the clinic stand-in): ``Agent`` built from the stack's settings,
as ``telehealth-agent run`` builds it, serving its API on a free port of 127.0.0.1. Tests talk to
it over HTTP with aiohttp's client and wait for what the agent tells on its event hub (recorded),
never with sleeps.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp

from telehealth_client import events
from telehealth_client.agent import Agent
from telehealth_client.config import load_settings
from telehealth_client.protocol.messages import ConsultationState
from telehealth_client.security.clinic_client import ClinicClient
from telehealth_devstack.stack import DEFAULT_DEPARTMENT as DEPARTMENT
from telehealth_devstack.stack import DevStack
from tests.support.recorder import Recorder

KIOSK = "kiosk-api"
PROVIDER = "dr-api"
SPECIALIST = "dr-api-specialist"
PATIENT = "pat-api"
APPOINTMENT = "appt-api"
CONSULTATION = f"consultation.{PROVIDER}.{PATIENT}"
WAIT = 15.0
CHECK_IN = {
    "appointmentId": APPOINTMENT,
    "patientId": PATIENT,
    "providerId": PROVIDER,
    "departmentId": DEPARTMENT,
}

_DEFAULT = object()


class Api:
    """One agent's API over HTTP: ``call`` answers (status, JSON body or text)."""

    def __init__(self, session: aiohttp.ClientSession, base: str, token: str) -> None:
        self.session = session
        self.base = base
        self.token = token

    def headers(self, token: Any = _DEFAULT) -> dict[str, str]:
        token = self.token if token is _DEFAULT else token
        return {} if token is None else {"Authorization": f"Bearer {token}"}

    async def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        token: Any = _DEFAULT,
        data: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, Any]:
        async with self.session.request(
            method,
            self.base + path,
            json=body if data is None and body is not None else None,
            data=data,
            headers={**self.headers(token), **(headers or {})},
        ) as response:
            text = await response.text()
            try:
                return response.status, json.loads(text)
            except json.JSONDecodeError:
                return response.status, text

    async def get(self, path: str, **options: Any) -> tuple[int, Any]:
        return await self.call("GET", path, **options)

    async def post(self, path: str, body: Any = None, **options: Any) -> tuple[int, Any]:
        return await self.call("POST", path, body, **options)


class RunningAgent:
    def __init__(self, agent: Agent, api: Api, seen: Recorder) -> None:
        self.agent = agent
        self.api = api
        self.seen = seen  # every event of its hub, in order

    async def wait_event(self, matches: Callable[[Any], bool], within: float = WAIT) -> Any:
        return (await self.seen.wait_for(matches, within=within))[-1]

    async def wait_state(self, state: ConsultationState, consultation_id: str = CONSULTATION) -> Any:
        return await self.wait_event(
            lambda e: (
                isinstance(e, events.StateChanged)
                and e.consultation_id == consultation_id
                and e.state is state
            )
        )


class Agents:
    """Starts agents on the stack (their API on a free port); stops each at the end."""

    def __init__(self, stack: DevStack, tmp_path: Path, session: aiohttp.ClientSession) -> None:
        self.stack = stack
        self.tmp_path = tmp_path
        self.session = session
        self._started: list[Agent] = []
        self._followers: list[asyncio.Task[None]] = []

    def settings_for(self, user_id: str, **extra: str) -> dict[str, str]:
        return {
            **self.stack.agent_environment(user_id),
            "TELEHEALTH_STATE_DIR": str(self.tmp_path / user_id),
            "TELEHEALTH_MEDIA": "false",
            "TELEHEALTH_RECONNECT_MAX_SECONDS": "0.5",
            **extra,
        }

    async def start(self, user_id: str, **extra: str) -> RunningAgent:
        environment = self.settings_for(user_id, **extra)
        agent = Agent(load_settings(environ=environment), serve_api=True)
        seen = Recorder()
        subscription = agent.hub.subscribe(max_pending=4096)

        async def follow() -> None:
            async for event in subscription:
                seen.add(event)

        self._followers.append(asyncio.create_task(follow()))
        self._started.append(agent)
        await agent.start()
        assert agent.api is not None and agent.api.address is not None
        return RunningAgent(
            agent, Api(self.session, agent.api.address, environment["TELEHEALTH_API_TOKEN"]), seen
        )

    async def aclose(self) -> None:
        for agent in reversed(self._started):
            await agent.aclose()
        for task in self._followers:
            task.cancel()
        await asyncio.gather(*self._followers, return_exceptions=True)


MEDIA_WAIT = 45.0  # the media children start (aiortc's import) on a shared 2-core machine


def video_flowing(event: object) -> bool:
    return (
        isinstance(event, events.MediaFlowing)
        and event.consultation_id == CONSULTATION
        and event.media == "video"
    )


async def call_under_way(
    agents: Agents, devices: Callable[[str], dict[str, str]]
) -> tuple[RunningAgent, RunningAgent]:
    """(kiosk, provider), both with media (``devices(name)``: the settings of the devices each media
    child opens), in a consultation whose call the provider started through its API: video flows
    both ways and both sides are in progress."""
    provider = await agents.start(PROVIDER, TELEHEALTH_MEDIA="true", **devices("provider"))
    kiosk = await agents.start(KIOSK, TELEHEALTH_MEDIA="true", **devices("patient"))
    await record_consent(agents.stack)
    status, answer = await kiosk.api.post("/v1/check-in", CHECK_IN)
    assert status == 201, answer
    assert provider.agent.provider is not None
    await provider.seen.until(
        lambda: any(p.consultation_id == CONSULTATION for p in provider.agent.provider.queue)  # type: ignore[union-attr]
    )
    one = f"/v1/consultations/{CONSULTATION}"
    assert (await provider.api.post(f"{one}/join"))[0] == 200
    await kiosk.wait_state(ConsultationState.CONNECTING)
    status, answer = await provider.api.post(f"{one}/call")
    assert status == 200, answer
    for running in (provider, kiosk):
        await running.wait_event(video_flowing, within=MEDIA_WAIT)
        await running.wait_state(ConsultationState.IN_PROGRESS)
    return kiosk, provider


async def consultation_joined(kiosk: RunningAgent, provider: RunningAgent, stack: DevStack) -> None:
    """Consent recorded, the patient checked in through the kiosk's API and the consultation
    joined through the provider's (no call): both in ``connecting``."""
    await record_consent(stack)
    status, answer = await kiosk.api.post("/v1/check-in", CHECK_IN)
    assert status == 201, answer
    assert provider.agent.provider is not None
    await provider.seen.until(
        lambda: any(p.consultation_id == CONSULTATION for p in provider.agent.provider.queue)  # type: ignore[union-attr]
    )
    status, answer = await provider.api.post(f"/v1/consultations/{CONSULTATION}/join")
    assert status == 200, answer
    await kiosk.wait_state(ConsultationState.CONNECTING)


async def record_consent(stack: DevStack, patient: str = PATIENT) -> None:
    assert stack.clinic is not None
    clinic = ClinicClient(stack.clinic.url, stack.kiosk_credential(KIOSK))
    try:
        await clinic.record_consent(patient, True, None)
    finally:
        await clinic.aclose()


async def mjpeg_parts(response: aiohttp.ClientResponse) -> AsyncIterator[bytes]:
    """Each JPEG of a ``multipart/x-mixed-replace`` answer, as the parts arrive (read as a browser
    would: ``--boundary``, headers with ``Content-Length``, a blank line, the image, CRLF)."""
    boundary = response.headers["Content-Type"].split("boundary=", 1)[1].encode()
    buffer = b""
    while True:
        head_end = buffer.find(b"\r\n\r\n")
        if head_end >= 0:
            head = buffer[:head_end]
            assert head.startswith(b"--" + boundary + b"\r\n"), head[:80]
            length = re.search(rb"(?i)content-length:\s*(\d+)", head)
            assert length is not None, head
            end = head_end + 4 + int(length.group(1))
            if len(buffer) >= end + 2:
                assert buffer[end : end + 2] == b"\r\n"
                yield buffer[head_end + 4 : end]
                buffer = buffer[end + 2 :]
                continue
        chunk = await response.content.readany()
        if not chunk:
            return
        buffer += chunk
