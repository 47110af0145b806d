"""A patient's CONSULTATION_CANCELLED on the waiting room counts only before a provider joined.

PROTOCOL.md: the waiting-room copy is for a patient who leaves before a provider joined (the
provider's queue learns of it). The patient's own side never reads the waiting room, so a
provider applying it later would leave the two sides in different states.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any

import pytest

from telehealth_client.protocol import channels
from telehealth_client.protocol.messages import ConsultationState as S
from tests.support.consultation import (
    CONSULTATION,
    PATIENT,
    PROVIDER,
    Parts,
    check_in_and_join,
    check_in_and_wait,
)
from tests.support.logs import LogLines

pytestmark = pytest.mark.integration

NOW = "2026-11-22T14:03:07.123Z"
# The patient's cancel, as a waiting room carries it.
CANCEL = {
    "action": "CONSULTATION_CANCELLED",
    "cancelledBy": PATIENT,
    "reason": "patient-left",
    "timestamp": NOW,
}


async def first_of(*waits: Awaitable[Any]) -> None:
    """Return once one of ``waits`` is done (each has its own timeout); cancel the others."""
    tasks = [asyncio.ensure_future(wait) for wait in waits]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            task.result()  # a timeout fails the test here
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def test_a_waiting_room_cancel_after_the_provider_joined_is_ignored(
    parts: Parts, log_lines: LogLines
) -> None:
    provider_hub, patient_hub, provider, patient = await parts.consented_pair()
    session = await check_in_and_join(patient, provider, patient_hub, provider_hub)

    await session.bus.publish(channels.waiting_room(PROVIDER), CANCEL)

    # Whichever comes first: the provider's verdict on it, or (the defect) its cancelled state.
    ignored = "waiting room cancel ignored"
    await first_of(log_lines.wait_line(ignored), provider_hub.wait_state(S.CANCELLED))
    assert provider.session(CONSULTATION).consultation.state is S.CONNECTING
    assert provider_hub.states() == ["checked-in", "connecting"]
    line = await log_lines.wait_line(ignored, f"consultation={CONSULTATION}", "state=connecting")
    assert "patient-left" not in line and NOW not in line
    assert session.consultation.state is S.CONNECTING  # both sides still agree

    # The consultation goes on: the next action is applied on both sides.
    await provider.start_consultation(CONSULTATION)
    await patient_hub.wait_state(S.IN_PROGRESS)
    assert provider_hub.states() == ["checked-in", "connecting", "in-progress"]


async def test_a_waiting_room_cancel_before_the_provider_joined_cancels(parts: Parts) -> None:
    provider_hub, patient_hub, provider, patient = await parts.consented_pair()
    session = await check_in_and_wait(patient, provider, patient_hub, provider_hub)

    # Only the waiting-room copy: still what takes the patient out of the queue.
    await session.bus.publish(channels.waiting_room(PROVIDER), CANCEL)

    await provider_hub.wait_state(S.CANCELLED)
    assert provider.queue == []
