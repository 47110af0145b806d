"""Two real Agent processes hold a call from their settings alone (camera, microphone, speaker,
media on by default): the provider calls on join, the kiosk answers, media flows both ways relay-only
through the development stack's coturn, and the consultation moves to in-progress on both."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from telehealth_client.protocol.messages import ConsultationState as S
from tests.support.agent_child import AgentChild, AgentChildren
from tests.support.consultation import (
    AGENT_CHECK_IN,
    CONSULTATION,
    Parts,
    patient_agent_environment,
    provider_agent_environment,
)
from tests.support.media import devices_environment

pytestmark = pytest.mark.integration


@pytest.fixture
async def agents(parts: Parts, tmp_path: Path, agent_children: AgentChildren) -> Callable[..., Any]:
    async def start(name: str) -> AgentChild:
        environment_of = patient_agent_environment if name == "patient" else provider_agent_environment
        environment = environment_of(parts.stack, tmp_path / f"{name}-state")
        return await agent_children.start({**environment, **devices_environment(tmp_path, name)})

    return start


def flowing(kind: str) -> Callable[[dict[str, Any]], bool]:
    return lambda line: line.get("event") == "media-flowing" and line["media"] == kind


async def test_two_agents_hold_a_relay_only_call_from_their_settings(parts: Parts, agents: Any) -> None:
    await parts.record_consent()
    provider: AgentChild = await agents("provider")
    patient: AgentChild = await agents("patient")
    checked_in = await patient.command("check-in", **AGENT_CHECK_IN)
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
