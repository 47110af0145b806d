"""A clinic outage longer than the patient token's life (issue 19), on the real relay, clinic
stand-in and SDK: the kiosk reaches the clinic through a ``CuttableLink`` (a real TCP hop whose
connections are reset and refused while cut), with PubNub's shortest token, 1 minute. The
consultation, its state and the chat outlive the outage (the provider sees its patient go silent
meanwhile); what was queued arrives once; a clinic refusal afterwards ends the consultation and the
provider hears of it.

Real time: the token must really expire at the relay (about 60 s), so this test takes about a
minute; every wait is for an event or a log line, never a fixed sleep.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from telehealth_client import events
from telehealth_client.consultation.roster import ChangeKind
from telehealth_client.protocol.messages import ConsultationState as S
from telehealth_client.security.tokens import RefreshPolicy
from telehealth_devstack.network import CuttableLink
from telehealth_devstack.stack import DevStack
from tests.support.consultation import (
    APPOINTMENT,
    CONSULTATION,
    DEPARTMENT,
    PATIENT,
    PROVIDER,
    Parts,
    RecordingHub,
    added,
    sent,
)
from tests.support.logs import LogLines

pytestmark = pytest.mark.integration

TOKEN_LIFE = 60.0  # PubNub's shortest TTL, 1 minute
WITHIN = TOKEN_LIFE + 30.0  # generous: the waits below are for events, not for this long


@pytest.fixture
async def stack() -> AsyncIterator[DevStack]:
    async with DevStack(providers=(PROVIDER,), token_ttl_minutes={"patient": 1}) as running:
        yield running


def absent(user_id: str) -> Callable[[Any], bool]:
    return lambda e: (
        isinstance(e, events.RosterChanged)
        and any(change.user_id == user_id and change.kind is ChangeKind.ABSENT for change in e.changes)
    )


async def test_a_clinic_outage_longer_than_the_token_keeps_the_consultation_then_a_refusal_ends_it(
    parts: Parts, log_lines: LogLines
) -> None:
    stack = parts.stack
    assert stack.clinic is not None
    patient_hub, provider_hub = RecordingHub(), RecordingHub()
    async with CuttableLink(f"127.0.0.1:{stack.clinic.port}") as clinic_link:
        provider = await parts.provider(provider_hub, durable=await parts.durable("cart", PROVIDER))
        await parts.record_consent()
        patient = parts.patient(
            patient_hub,
            durable=await parts.durable("kiosk-store"),
            # Refresh early and retry often, so the outage covers the token's whole life and
            # the return of the clinic is noticed within 2 s.
            policy=RefreshPolicy(refresh_ratio=0.05, jitter_ratio=0.0, retry_max_seconds=2.0),
            clinic_url=f"http://{clinic_link.origin}",
            presence_timeout_seconds=10,  # heartbeats every 5 s: one soon tells the token has run out
        )
        session = await patient.check_in(
            appointment_id=APPOINTMENT, patient_id=PATIENT, provider_id=PROVIDER, department_id=DEPARTMENT
        )
        await provider_hub.wait_state(S.CHECKED_IN)
        await provider.join(CONSULTATION)
        await provider.start_consultation(CONSULTATION)
        await patient_hub.wait_state(S.IN_PROGRESS)
        patient_chat, provider_chat = patient.chat, provider.chat(CONSULTATION)
        assert patient_chat is not None

        # The clinic goes away for longer than the token has left to live.
        clinic_link.cut()
        (renewing,) = await patient_hub.wait_for(lambda e: isinstance(e, events.AccessRenewing))
        assert renewing.token_expired is False
        await log_lines.wait_line("heartbeat failed error=HTTP 403", within=WITHIN)  # expired at the relay
        # The provider sees its patient go silent (presence timed out: the heartbeats are refused).
        await provider_hub.wait_for(absent(PATIENT), within=WITHIN)
        question = await patient_chat.send("still there?")
        await log_lines.wait_line(f"token denied by the bus user={PATIENT} operation=publish")
        answer = await provider_chat.send("yes, go on")
        # Queued, not lost, and the consultation goes on: nothing ended, nothing was wiped.
        assert question.status == "pending"
        assert [e.id for e in patient_chat.entries if e.id == question.id] == [question.id]
        assert not session.closed
        assert session.consultation.state is S.IN_PROGRESS
        assert not any(isinstance(e, events.AccessDenied | events.SessionClosed) for e in patient_hub.items)

        # The clinic is back: a new token, and everything queued arrives once.
        clinic_link.restore()
        await patient_hub.wait_for(lambda e: isinstance(e, events.AccessRenewed))
        await patient_hub.wait_for(sent(question.id))
        await provider_hub.wait_for(added(PATIENT))
        await patient_hub.wait_for(added(PROVIDER))
        later = await patient_chat.send("thanks")
        await provider_hub.wait_for(added(PATIENT), count=2)
        assert [e.message_id for e in provider_hub.items if added(PATIENT)(e)] == [question.id, later.id]
        assert [e.message_id for e in patient_hub.items if added(PROVIDER)(e)] == [answer.id]
        assert session.consultation.state is S.IN_PROGRESS and not session.closed

        # Now the clinic's own verdict (consent withdrawn): the consultation ends, and the
        # provider is told by the patient's cancel, sent while its token still worked.
        await parts.record_consent(granted=False)
        cancelled = await provider_hub.wait_state(S.CANCELLED, within=WITHIN)
        assert cancelled.cancel_reason == "consent-revoked"
        denied = await patient_hub.wait_for(lambda e: isinstance(e, events.AccessDenied))
        assert [e.operation for e in denied] == ["refresh"]
        await patient_hub.wait_for(lambda e: isinstance(e, events.EndpointIdle))
        assert patient.idle
        assert session.close_reason == "cancelled"
