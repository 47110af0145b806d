"""A kiosk Agent's preflight: the device checks and the network judged, and the verdicts handed to the
provider as DEVICE_STATUS with the next check-in (real Agent, real stack, real media test child)."""

from __future__ import annotations

import asyncio

import pytest

from telehealth_client import events
from telehealth_client.agent import Agent
from telehealth_devstack.stack import DevStack
from tests.support.consultation import (
    CHECK_IN,
    CONSULTATION,
    Parts,
    RecordingHub,
)
from tests.support.preflight import kiosk_settings

pytestmark = pytest.mark.integration


async def test_a_kiosks_preflight_goes_to_the_provider_with_the_check_in(
    stack: DevStack, parts: Parts, tmp_path: object
) -> None:
    provider_hub = RecordingHub()
    await parts.provider(provider_hub)
    await parts.record_consent()
    settings = kiosk_settings(
        stack,
        TELEHEALTH_PREFLIGHT_MEDIA_SECONDS="2",
        TELEHEALTH_STATE_DIR=str(tmp_path),
        TELEHEALTH_MEDIA="false",
    )
    agent = Agent(settings)
    await agent.start()
    try:
        report = await asyncio.wait_for(agent.preflight(skip={"devices"}), 60.0)
        assert report.network.verdict == "video"
        assert agent.patient is not None
        await agent.patient.check_in(**CHECK_IN)
        [reported] = await provider_hub.wait_for(lambda e: isinstance(e, events.DeviceStatusReported))
        assert reported == events.DeviceStatusReported(CONSULTATION, "skipped", "skipped", "skipped", "video")
    finally:
        await agent.aclose()
