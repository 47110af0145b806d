"""Two real Agent processes hold a call from their settings alone (camera, microphone, speaker,
media on by default): the provider calls on join, the kiosk answers, media flows both ways relay-only
through the development stack's coturn, and the consultation moves to in-progress on both."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from devices import synthetic
from telehealth_client.protocol.messages import ConsultationState as S

from ..consultation.conftest import APPOINTMENT, CONSULTATION, DEPARTMENT, KIOSK, PATIENT, PROVIDER, Parts
from ..consultation.test_restart import AgentProcess
from .numbered import write_numbered_video

pytestmark = pytest.mark.integration


def devices_environment(tmp_path: Path, name: str) -> dict[str, str]:
    """The settings an agent's media child reads: a numbered video as the camera, a tone as the
    microphone and a speaker writing to a file (ALSA file devices)."""
    video = write_numbered_video(tmp_path / f"{name}.mkv", frames=60, first=1 if name == "patient" else 1000)
    tone = synthetic.write_pcm(tmp_path / f"{name}-tone.raw", "tone", seconds=30.0)
    alsa = synthetic.write_alsa_config(tmp_path / f"{name}-alsa", tone, loopback=False)
    assert alsa.microphone is not None and alsa.speaker is not None
    return {
        "TELEHEALTH_CAMERA": str(video),
        "TELEHEALTH_MICROPHONE": alsa.microphone,
        "TELEHEALTH_SPEAKER": alsa.speaker,
        **alsa.env,
    }


@pytest.fixture
async def agents(parts: Parts, tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    started: list[AgentProcess] = []

    async def start(name: str) -> AgentProcess:
        if name == "patient":
            environment = {
                **parts.stack.agent_environment(),
                "TELEHEALTH_USER_ID": KIOSK,
                "TELEHEALTH_ROLE": "patient",
            }
        else:
            environment = dict(parts.stack.agent_environment(PROVIDER))
        environment["TELEHEALTH_STATE_DIR"] = str(tmp_path / f"{name}-state")
        environment.update(devices_environment(tmp_path, name))
        agent = await AgentProcess.start(environment)
        started.append(agent)
        await agent.wait_line(lambda line: line.get("event") == "started")
        return agent

    yield start
    for agent in started:
        await agent.stop()


def flowing(kind: str) -> Callable[[dict[str, Any]], bool]:
    return lambda line: line.get("event") == "media-flowing" and line["media"] == kind


async def test_two_agents_hold_a_relay_only_call_from_their_settings(parts: Parts, agents: Any) -> None:
    await parts.record_consent()
    provider: AgentProcess = await agents("provider")
    patient: AgentProcess = await agents("patient")
    checked_in = await patient.command(
        "check-in", appointmentId=APPOINTMENT, patientId=PATIENT, providerId=PROVIDER, departmentId=DEPARTMENT
    )
    assert checked_in["ok"], checked_in
    await provider.wait_state(S.CHECKED_IN)
    assert (await provider.command("join", consultationId=CONSULTATION))["ok"]
    await patient.wait_state(S.CONNECTING)
    called = await provider.command("call", consultationId=CONSULTATION)
    assert called["ok"], called
    for agent in (patient, provider):
        await agent.wait_line(flowing("video"), within=60.0)
        await agent.wait_line(flowing("audio"), within=60.0)
        await agent.wait_state(S.IN_PROGRESS)
    assert not [line for line in patient.lines + provider.lines if line.get("event") == "media-failed"]
