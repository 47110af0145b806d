"""Who may resolve an escalation (PROTOCOL.md, "Emergency"; issue 20, finding 5): its own escalator
or a provider on the department's on-call list. Any other resolution on the channel (a nurse's, a
provider not on call, one whose ``resolvedBy`` is not its publisher) is ignored, so the rightful
resolver still can, and audited once as ACCESS_DENIED with IDs only; a local ``resolve`` by someone
who may not is refused before anything is published. Real relay, clinic stand-in and endpoints."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from telehealth_client.consultation.session import now
from telehealth_client.emergency.desk import EmergencyError
from telehealth_client.protocol.messages import EmergencyResolved, encode
from telehealth_devstack.stack import DevStack
from tests.support.emergency import (
    CANARY,
    CONSULTATION,
    DEPARTMENT,
    EMERGENCY_CHANNEL,
    ON_CALL,
    OTHER,
    PROVIDER,
    SPECIALIST,
    EmergencyParts,
    Staff,
    escalation_update,
    staff,
    stored_events,
)
from tests.support.logs import LogLines

pytestmark = pytest.mark.integration

NURSE = "nurse-kim"
# What a refused resolver typed: it must not reach the audit trail.
REFUSED_TEXT = "CANARY-r41 resolved, nothing to see"


@pytest.fixture
async def stack() -> AsyncIterator[DevStack]:
    # Lee and Okafor are on call; Park is a provider of the department, off call; Kim is a nurse.
    on_call = {DEPARTMENT: [PROVIDER, SPECIALIST]}
    async with DevStack(providers=ON_CALL, nurses=(NURSE,), on_call=on_call) as running:
        yield running


async def publish_resolution(
    parts: EmergencyParts, publisher: str, escalation_id: str, resolved_by: str | None = None
) -> None:
    """``publisher``'s app publishes a resolution with its own standing token (which may write the
    department's emergency channel), as an app that does not follow the rule would."""
    role = parts.stack.users[publisher].role
    grant = await parts.clinic(publisher).request_token(publisher, role, departmentId=DEPARTMENT)
    message = EmergencyResolved(
        id=escalation_id,
        resolved_by=resolved_by or publisher,
        resolution=REFUSED_TEXT,
        timestamp=now(),
    )
    await parts.raw_bus(publisher, grant.token).publish(EMERGENCY_CHANNEL, encode(message))


def refusals(member: Staff, escalation_id: str) -> list[dict[str, Any]]:
    return [
        e
        for e in stored_events(member.durable)
        if e["eventType"] == "ACCESS_DENIED" and e["resource"]["id"] == escalation_id
    ]


async def refused_on(log_lines: LogLines, desk_user: str, escalation_id: str, *more: str) -> str:
    """The refusal logged by ``desk_user``'s desk: by then it is in that desk's audit store."""
    return await log_lines.wait_line(
        "emergency resolution refused", f"id={escalation_id}", f"desk={desk_user}", *more
    )


async def the_department(parts: EmergencyParts) -> tuple[Staff, Staff, Staff]:
    """Lee escalates (on call), Okafor (on call) and Park (off call) follow the channel."""
    return (
        await staff(parts, PROVIDER),
        await staff(parts, SPECIALIST),
        await staff(parts, OTHER),
    )


@pytest.mark.parametrize("resolver", [NURSE, OTHER], ids=["nurse", "provider-off-call"])
async def test_a_resolution_from_someone_who_may_not_resolve_is_ignored_and_audited(
    parts: EmergencyParts, log_lines: LogLines, resolver: str
) -> None:
    lee, okafor, park = await the_department(parts)
    escalation = await lee.desk.escalate(CONSULTATION, "critical", CANARY)
    for member in (okafor, park):
        await member.hub.wait_for(escalation_update(escalation.id, status="active"))

    await publish_resolution(parts, resolver, escalation.id)
    line = await refused_on(log_lines, PROVIDER, escalation.id, f"resolver={resolver}")
    assert "reason=not-escalator-or-on-call" in line
    # Ignored: still open on the escalator's desk, nothing announced as resolved.
    assert [e.id for e in lee.desk.open] == [escalation.id]
    assert not [e for e in lee.hub.items if escalation_update(escalation.id, status="resolved")(e)]
    [denied] = refusals(lee, escalation.id)
    assert denied["resource"] == {"type": "escalation", "id": escalation.id, "channel": EMERGENCY_CHANNEL}
    assert (denied["action"], denied["outcome"]) == ("resolve", "failure")
    assert denied["actor"]["userId"] == PROVIDER  # the desk that refused it
    assert denied["metadata"] == {
        "departmentId": DEPARTMENT,
        "userId": resolver,
        "refusal": "not-escalator-or-on-call",
    }
    assert "CANARY" not in json.dumps(stored_events(lee.durable))

    # The escalator's own resolve afterwards succeeds, and is what every desk shows.
    resolved = await lee.desk.resolve(escalation.id, "stabilised by lee")
    assert (resolved.status, resolved.resolved_by) == ("resolved", PROVIDER)
    for member in (okafor, park):
        await member.hub.wait_for(escalation_update(escalation.id, status="resolved"))
    for member in (lee, okafor, park):
        kept = member.desk.get(escalation.id)
        assert kept is not None
        assert (kept.status, kept.resolved_by, kept.resolution) == ("resolved", PROVIDER, "stabilised by lee")


async def test_an_on_call_provider_who_did_not_escalate_resolves_after_a_refused_resolution(
    parts: EmergencyParts, log_lines: LogLines
) -> None:
    lee, okafor, park = await the_department(parts)
    escalation = await lee.desk.escalate(CONSULTATION, "urgent", CANARY)
    await okafor.hub.wait_for(escalation_update(escalation.id, status="active"))
    await publish_resolution(parts, NURSE, escalation.id)
    await refused_on(log_lines, SPECIALIST, escalation.id, f"resolver={NURSE}")

    resolved = await okafor.desk.resolve(escalation.id, "seen by okafor")
    assert (resolved.status, resolved.resolved_by) == ("resolved", SPECIALIST)
    for member in (lee, park):
        await member.hub.wait_for(escalation_update(escalation.id, status="resolved"))
    for member in (lee, okafor, park):
        kept = member.desk.get(escalation.id)
        assert kept is not None and (kept.resolved_by, kept.resolution) == (SPECIALIST, "seen by okafor")


async def test_a_resolution_naming_someone_else_than_its_publisher_is_ignored_and_audited(
    parts: EmergencyParts, log_lines: LogLines
) -> None:
    """Park (off call) publishes a resolution claiming on-call Okafor resolved it."""
    lee = await staff(parts, PROVIDER)
    escalation = await lee.desk.escalate(CONSULTATION, "critical", CANARY)
    await lee.hub.wait_for(escalation_update(escalation.id, delivered=True))

    await publish_resolution(parts, OTHER, escalation.id, resolved_by=SPECIALIST)
    await log_lines.wait_line("emergency message dropped", "field=resolvedBy", "must equal the publisher")
    await refused_on(log_lines, PROVIDER, escalation.id, f"resolver={OTHER}", "reason=not-the-publisher")
    assert [e.id for e in lee.desk.open] == [escalation.id]
    [denied] = refusals(lee, escalation.id)
    assert denied["metadata"] == {"departmentId": DEPARTMENT, "userId": OTHER, "refusal": "not-the-publisher"}
    assert "CANARY" not in json.dumps(denied)


async def test_a_local_resolve_by_someone_who_may_not_resolve_is_refused_and_publishes_nothing(
    parts: EmergencyParts,
) -> None:
    lee, _, park = await the_department(parts)
    escalation = await lee.desk.escalate(CONSULTATION, "critical", CANARY)
    await park.hub.wait_for(escalation_update(escalation.id, status="active"))
    assert await lee.durable.outbox.wait_drained(15.0)
    before = list(park.hub.items)

    with pytest.raises(EmergencyError) as refused:
        await park.desk.resolve(escalation.id, "handled by park")
    assert refused.value.field == "resolvedBy"
    assert refused.value.reason == (
        f"{OTHER} may not resolve it: only its escalator or a provider on call in department {DEPARTMENT}"
    )
    assert [e.id for e in park.desk.open] == [escalation.id]
    assert park.durable.outbox.pending() == [] and park.hub.items == before
    actions = [e["action"] for e in stored_events(park.durable)]
    assert "resolve" not in actions
    stored = await park.endpoint.bus.history(EMERGENCY_CHANNEL, limit=100)
    assert [e.message.get("action") for e in stored] == ["EMERGENCY_ESCALATION"]


async def test_a_refused_resolution_read_again_after_a_restart_is_not_audited_again(
    parts: EmergencyParts, log_lines: LogLines
) -> None:
    lee = await staff(parts, PROVIDER)
    escalation = await lee.desk.escalate(CONSULTATION, "critical", CANARY)
    await lee.hub.wait_for(escalation_update(escalation.id, delivered=True))
    await publish_resolution(parts, NURSE, escalation.id)
    await refused_on(log_lines, PROVIDER, escalation.id, "audited=now")
    await lee.endpoint.aclose()
    await lee.durable.aclose()

    # The same cart starts again and reads the channel's history: the refusal is in it again.
    again = await staff(parts, PROVIDER)
    await refused_on(log_lines, PROVIDER, escalation.id, "audited=before")
    assert [e.id for e in again.desk.open] == [escalation.id]
    assert len(refusals(again, escalation.id)) == 1
