"""Bad emergency input: refused by the API with the field and the reason, or dropped from the
channel with a logged reason; either way nothing changes (nothing open, queued, audited or sealed)."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from telehealth_client.consultation.session import now
from telehealth_client.emergency.desk import STORE_NAME, EmergencyError
from telehealth_client.protocol.messages import EmergencyEscalation, EmergencyResolved, encode
from tests.support.consultation import Parts
from tests.support.emergency import (
    CANARY,
    CONSULTATION,
    DEPARTMENT,
    EMERGENCY_CHANNEL,
    OTHER,
    PROVIDER,
    SPECIALIST,
    escalation_update,
    staff,
)
from tests.support.logs import LogLines

pytestmark = pytest.mark.integration


@pytest.mark.parametrize(
    ("arguments", "field", "reason"),
    [
        ((CONSULTATION, "severe", CANARY), "severity", "must be urgent, critical or life-threatening"),
        ((CONSULTATION, None, CANARY), "severity", "must be urgent, critical or life-threatening"),
        ((CONSULTATION, "urgent", "   "), "reason", "must be 1-1000 characters and not blank"),
        ((CONSULTATION, "urgent", ""), "reason", "must be 1-1000 characters and not blank"),
        ((CONSULTATION, "urgent", "x" * 1001), "reason", "must be 1-1000 characters and not blank"),
        ((CONSULTATION, "urgent", 42), "reason", "must be a string"),
        (("consultation.dr-lee", "urgent", CANARY), "consultationId", "must be"),
        (("consultation.dr lee.pat-1", "urgent", CANARY), "consultationId", "providerId may contain only"),
        ((None, "urgent", CANARY), "consultationId", "must be"),
    ],
)
async def test_a_bad_escalation_is_refused_and_changes_nothing(
    parts: Parts, arguments: tuple[Any, Any, Any], field: str, reason: str
) -> None:
    lee = await staff(parts, PROVIDER)
    with pytest.raises(EmergencyError) as refused:
        await lee.desk.escalate(*arguments)
    assert refused.value.field == field and refused.value.reason.startswith(reason)
    assert "CANARY" not in str(refused.value)
    assert lee.desk.open == [] and lee.durable.outbox.pending() == []
    assert not [e for e in lee.hub.items if escalation_update()(e)]
    assert list(parts.tmp_path.rglob(STORE_NAME)) == []


async def test_a_resolution_for_an_unknown_or_closed_escalation_is_refused_and_changes_nothing(
    parts: Parts,
) -> None:
    lee = await staff(parts, PROVIDER)
    escalation = await lee.desk.escalate(CONSULTATION, "urgent", CANARY)
    await lee.hub.wait_for(escalation_update(escalation.id, delivered=True, notified=2))
    await lee.durable.outbox.wait_drained(15.0)
    before = list(lee.hub.items)
    for unknown in (str(uuid.uuid4()), "not-a-uuid", None):
        with pytest.raises(EmergencyError) as refused:
            await lee.desk.resolve(unknown, "handled")  # type: ignore[arg-type]
        assert (refused.value.field, refused.value.reason) == ("id", "names no open escalation")
    with pytest.raises(EmergencyError) as blank:
        await lee.desk.resolve(escalation.id, " ")
    assert blank.value.field == "resolution"
    assert [e.id for e in lee.desk.open] == [escalation.id]
    assert lee.durable.outbox.pending() == [] and lee.hub.items == before

    await lee.desk.resolve(escalation.id, "handled")
    with pytest.raises(EmergencyError) as again:
        await lee.desk.resolve(escalation.id, "handled twice")
    assert again.value.field == "id"
    assert lee.desk.get(escalation.id).resolution == "handled"  # type: ignore[union-attr]


async def test_bad_emergency_messages_on_the_channel_are_dropped_with_a_reason(
    parts: Parts, log_lines: LogLines
) -> None:
    lee = await staff(parts, PROVIDER)
    grant = await parts.clinic(SPECIALIST).request_token(SPECIALIST, "provider", departmentId=DEPARTMENT)
    okafor_bus = parts.raw_bus(SPECIALIST, grant.token)

    # A resolution naming no escalation on this channel.
    unknown = EmergencyResolved(
        id=str(uuid.uuid4()), resolved_by=SPECIALIST, resolution="done", timestamp=now()
    )
    await okafor_bus.publish(EMERGENCY_CHANNEL, encode(unknown))
    await log_lines.wait_line("emergency message dropped", "field=id", "names no escalation")
    # An escalation that claims another provider raised it.
    forged = EmergencyEscalation(
        id=str(uuid.uuid4()),
        consultation_id=CONSULTATION,
        escalated_by=OTHER,
        severity="critical",
        reason=CANARY,
        timestamp=now(),
    )
    await okafor_bus.publish(EMERGENCY_CHANNEL, encode(forged))
    await log_lines.wait_line("emergency message dropped", "field=escalatedBy", "must equal the publisher")

    assert lee.desk.open == [] and lee.desk.get(unknown.id) is None and lee.desk.get(forged.id) is None
    assert not [e for e in lee.hub.items if escalation_update()(e)]
    assert list(parts.tmp_path.rglob(STORE_NAME)) == []
    assert not [line for line in log_lines.lines if "CANARY" in line]
