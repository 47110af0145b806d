"""Tokens during a consultation: 1-minute patient tokens refreshed several times (the refresh point
brought forward to 5 % of the TTL, about 3 s, on real time) while the consultation goes on; the
patient's token opens no other patient's consultation."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from telehealth_client.consultation.patient import DeviceReport
from telehealth_client.protocol.messages import ConsultationState as S
from telehealth_client.pubsub.bus import AccessDeniedError
from telehealth_client.security.tokens import RefreshPolicy
from telehealth_devstack.stack import DevStack
from tests.support.consultation import (
    CHECK_IN,
    CONSULTATION,
    PATIENT,
    PROVIDER,
    SPECIALIST,
    Parts,
    RecordingHub,
)
from tests.support.logs import LogLines

pytestmark = pytest.mark.integration

OTHER_CONSULTATION = f"consultation.{PROVIDER}.pat-2"


@pytest.fixture
async def stack() -> AsyncIterator[DevStack]:
    async with DevStack(providers=(PROVIDER, SPECIALIST), token_ttl_minutes={"patient": 1}) as running:
        yield running


async def test_the_consultation_goes_on_across_token_refreshes(parts: Parts, log_lines: LogLines) -> None:
    provider_hub, patient_hub = RecordingHub(), RecordingHub()
    provider = await parts.provider(provider_hub)
    await parts.record_consent()
    patient = parts.patient(patient_hub, policy=RefreshPolicy(refresh_ratio=0.05, jitter_ratio=0.0))
    session = await patient.check_in(**CHECK_IN)
    await provider_hub.wait_state(S.CHECKED_IN)
    steps = (
        (provider.send_queue_updates, S.WAITING),
        (lambda: provider.join(CONSULTATION), S.CONNECTING),
        (lambda: provider.start_consultation(CONSULTATION), S.IN_PROGRESS),
    )
    for step, state in steps:
        await log_lines.wait_line(f"token refreshed user={PATIENT}", within=20.0)
        log_lines.lines = [line for line in log_lines.lines if not line.startswith("token refreshed")]
        await step()
        await patient_hub.wait_state(state)
    # The patient still publishes with its latest token.
    await patient.report_devices(DeviceReport("pass", "pass", "warn", "video"))
    await provider_hub.wait_for(lambda e: getattr(e, "kind", "") == "device-status")
    assert session.consultation.state is S.IN_PROGRESS
    assert len(parts.clinics[None].tokens) >= 4  # the first and three refreshes
    assert patient_hub.states() == ["checked-in", "waiting", "connecting", "in-progress"]


async def test_a_patient_token_opens_no_other_patients_consultation(parts: Parts) -> None:
    await parts.provider(RecordingHub())
    await parts.record_consent()
    patient = parts.patient(RecordingHub())
    session = await patient.check_in(**CHECK_IN)
    with pytest.raises(AccessDeniedError) as read:
        await session.bus.history(OTHER_CONSULTATION)
    assert str(read.value) == "history: access denied by Access Manager (HTTP 403)"
    with pytest.raises(AccessDeniedError) as write:
        await session.bus.publish(OTHER_CONSULTATION, {"type": "probe"})
    assert write.value.status_code == 403
    assert await session.bus.history(CONSULTATION) is not None  # its own stays open
