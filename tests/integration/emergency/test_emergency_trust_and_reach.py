"""Emergency defects found by a review from outside (real relay, clinic stand-in, endpoints): a later
resolution rewrote the first; a patient could raise an emergency alert on its provider's cart; an
escalation to a department the cart cannot reach was accepted and never delivered."""

from __future__ import annotations

import uuid

import pytest

from telehealth_client import events
from telehealth_client.consultation.session import now
from telehealth_client.emergency.desk import EmergencyError
from telehealth_client.protocol import channels
from telehealth_client.protocol.messages import (
    EmergencyNotification,
    EmergencyResolved,
    emergency_push_meta,
    encode,
)
from tests.support.consultation import APPOINTMENT, Parts
from tests.support.emergency import (
    CONSULTATION,
    DEPARTMENT,
    EMERGENCY_CHANNEL,
    OTHER,
    PATIENT,
    PROVIDER,
    SPECIALIST,
    escalation_update,
    staff,
)

pytestmark = pytest.mark.integration


async def test_a_resolved_escalation_keeps_its_first_resolution(parts: Parts) -> None:
    """A second EMERGENCY_RESOLVED (by another member of the department, under its own name) must
    not rewrite who resolved the escalation and how: the resolution is the record."""
    lee = await staff(parts, PROVIDER)
    okafor = await staff(parts, SPECIALIST)
    park = await staff(parts, OTHER)
    escalation = await lee.desk.escalate(CONSULTATION, "critical", "first reason")
    await okafor.hub.wait_for(escalation_update(escalation.id, status="active"))
    await okafor.desk.resolve(escalation.id, "stabilised by okafor")
    await lee.hub.wait_for(escalation_update(escalation.id, status="resolved"))
    assert lee.desk.get(escalation.id).resolved_by == SPECIALIST

    # Park publishes its own (validly signed, publisher == resolvedBy) resolution afterwards.
    grant = await parts.clinic(OTHER).request_token(OTHER, "provider", departmentId=DEPARTMENT)
    raw = parts.raw_bus(OTHER, grant.token)
    late = EmergencyResolved(
        id=escalation.id, resolved_by=OTHER, resolution="nothing happened here", timestamp=now()
    )
    await raw.publish(EMERGENCY_CHANNEL, encode(late))
    # A later escalation on the same channel: once lee's desk shows it, it has handled the above.
    marker = await park.desk.escalate(CONSULTATION, "urgent", "marker")
    await lee.hub.wait_for(escalation_update(marker.id))

    kept = lee.desk.get(escalation.id)
    assert (kept.resolved_by, kept.resolution) == (SPECIALIST, "stabilised by okafor")


async def test_a_patient_cannot_raise_an_emergency_alert_on_its_provider(parts: Parts) -> None:
    """A patient token may write its provider's notification channel (PATIENT_READY); an
    EMERGENCY_ESCALATION notification from it must not alert the provider."""
    lee = await staff(parts, PROVIDER)
    await parts.record_consent()
    grant = await parts.clinic().request_token(
        PATIENT, "patient", providerId=PROVIDER, appointmentId=APPOINTMENT
    )
    patient_bus = parts.raw_bus(PATIENT, grant.token)
    forged = str(uuid.uuid4())
    await patient_bus.publish(
        channels.notification(PROVIDER),
        encode(
            EmergencyNotification(
                title="Emergency escalation",
                body="life-threatening escalation in department er",
                priority="critical",
                timestamp=now(),
                escalation_id=forged,
            )
        ),
        meta=emergency_push_meta("life-threatening", forged),
    )
    # A genuine one from a colleague afterwards, on the same channel: once it is shown, the
    # forged one before it was handled.
    okafor = await staff(parts, SPECIALIST)
    genuine = await okafor.desk.escalate(CONSULTATION, "critical", "genuine")
    await lee.hub.wait_for(lambda e: isinstance(e, events.EmergencyAlert) and e.escalation_id == genuine.id)
    alerted = [e.escalation_id for e in lee.hub.items if isinstance(e, events.EmergencyAlert)]
    assert forged not in alerted


async def test_an_escalation_to_a_department_this_cart_cannot_reach_is_not_silently_accepted(
    parts: Parts,
) -> None:
    """``escalate(..., department_id="cardio")`` from an ER cart: its token cannot write
    ``emergency.cardio``, so the escalation could never be delivered: refused at once, nothing kept."""
    lee = await staff(parts, PROVIDER)
    with pytest.raises(EmergencyError) as refused:
        await lee.desk.escalate(CONSULTATION, "critical", "wrong department", department_id="cardio")
    assert (refused.value.field, refused.value.reason) == (
        "departmentId",
        f"must be this cart's department ({DEPARTMENT})",
    )
    assert lee.desk.open == [] and lee.durable.outbox.pending() == []


async def test_a_desk_keeps_only_the_newest_resolved_escalations(
    parts: Parts, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cart runs for months: resolved escalations do not pile up in its memory."""
    monkeypatch.setattr("telehealth_client.emergency.desk.MAX_RESOLVED_KEPT", 2)
    lee = await staff(parts, PROVIDER)
    okafor = await staff(parts, SPECIALIST)
    raised = [await lee.desk.escalate(CONSULTATION, "urgent", f"reason {n}") for n in range(3)]
    for escalation in raised:
        await lee.desk.resolve(escalation.id, "handled")
    for desk_hub in (lee.hub, okafor.hub):
        for escalation in raised:
            await desk_hub.wait_for(escalation_update(escalation.id, status="resolved"))
    assert await lee.durable.outbox.wait_drained(15.0)
    marker = await lee.desk.escalate(CONSULTATION, "urgent", "marker")  # after the resolutions' echoes
    await okafor.hub.wait_for(escalation_update(marker.id))
    await lee.hub.wait_for(escalation_update(marker.id, delivered=True))
    for desk in (lee.desk, okafor.desk):
        assert desk.get(raised[0].id) is None
        assert desk.get(raised[1].id) is not None and desk.get(raised[2].id) is not None
