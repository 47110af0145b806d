"""The department's emergencies (a provider's or nurse's cart): the open ones, escalate, resolve.
An escalation's reason and resolution are PHI shown to staff: answered here, never logged."""

from __future__ import annotations

from telehealth_client.api.errors import ApiError
from telehealth_client.api.models import (
    EscalateRequest,
    EscalationAnswer,
    EscalationsAnswer,
    ResolveRequest,
)
from telehealth_client.api.routing import STAFF, Call, Route, not_up
from telehealth_client.api.views import escalation_view
from telehealth_client.emergency.desk import EmergencyDesk


def desk_of(call: Call) -> EmergencyDesk:
    desk = call.agent.emergency
    if desk is None:
        if call.agent.starting:
            raise not_up(call.agent, "the emergency desk")
        raise ApiError(409, "no-emergency-desk", "this cart has no emergency desk running", state="none")
    return desk


async def open_escalations(call: Call) -> EscalationsAnswer:
    return EscalationsAnswer(escalations=[escalation_view(e) for e in desk_of(call).open])


async def escalate(call: Call) -> EscalationAnswer:
    body: EscalateRequest = call.body
    escalation = await desk_of(call).escalate(body.consultation_id, body.severity, body.reason)
    return EscalationAnswer(escalation=escalation_view(escalation))


async def resolve(call: Call) -> EscalationAnswer:
    body: ResolveRequest = call.body
    escalation = await desk_of(call).resolve(call.param("escalation_id"), body.resolution)
    return EscalationAnswer(escalation=escalation_view(escalation))


ROUTES = [
    Route(
        "GET", "/v1/emergencies", open_escalations, "The department's open escalations", "emergency",
        roles=STAFF, answer=EscalationsAnswer, conflicts=True,
    ),
    Route(
        "POST", "/v1/emergencies", escalate, "Escalate an emergency (durable once answered)", "emergency",
        roles=STAFF, body=EscalateRequest, answer=EscalationAnswer, status=201, conflicts=True, errors=(503,),
    ),
    Route(
        "POST", "/v1/emergencies/{escalation_id}/resolve", resolve, "Resolve an open escalation",
        "emergency", roles=STAFF, body=ResolveRequest, answer=EscalationAnswer, conflicts=True,
        errors=(404, 503),
    ),
]  # fmt: skip
