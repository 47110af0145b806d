"""The provider cart's routes: the waiting room, queue updates, and one consultation's lifecycle
(join, call, end the call, wrap up, end with the summary, invite, remove)."""

from __future__ import annotations

from telehealth_client.api.errors import ApiError
from telehealth_client.api.models import (
    Accepted,
    EndAnswer,
    EndRequest,
    InviteRequest,
    QueueUpdatesAnswer,
    QueueUpdatesRequest,
    RemoveAnswer,
    RemoveRequest,
    SummaryView,
    WaitingPatientView,
    WaitingRoomAnswer,
)
from telehealth_client.api.routing import PROVIDER, Call, Route, not_up
from telehealth_client.api.views import consultation_view
from telehealth_client.consultation.provider import ProviderEndpoint


def provider_of(call: Call) -> ProviderEndpoint:
    provider = call.agent.provider
    if provider is None:
        raise not_up(call.agent, "the cart's endpoint")
    return provider


def _accepted(call: Call, consultation_id: str) -> Accepted:
    session = provider_of(call).sessions[consultation_id]
    return Accepted(consultation=consultation_view(session, call.state.calls.get(consultation_id)))


async def waiting_room(call: Call) -> WaitingRoomAnswer:
    return WaitingRoomAnswer(
        waiting=[
            WaitingPatientView(
                consultation_id=p.consultation_id,
                patient_id=p.patient_id,
                appointment_id=p.appointment_id,
                state=str(p.state),
                present=p.present,
            )
            for p in provider_of(call).queue
        ]
    )


async def queue_updates(call: Call) -> QueueUpdatesAnswer:
    body: QueueUpdatesRequest = call.body
    return QueueUpdatesAnswer(sent=await provider_of(call).send_queue_updates(body.minutes_per_patient))


async def join(call: Call) -> Accepted:
    cid = call.param("consultation_id")
    await provider_of(call).join(cid)
    return _accepted(call, cid)


async def start_call(call: Call) -> Accepted:
    cid = call.param("consultation_id")
    call.state.calls[cid] = await provider_of(call).call(cid)
    return _accepted(call, cid)


async def end_call(call: Call) -> Accepted:
    cid = call.param("consultation_id")
    provider = provider_of(call)
    provider.session(cid)  # 404 for a consultation this cart does not hold
    started = call.state.calls.get(cid)
    if started is None:
        raise ApiError(
            409, "no-call", "no call was started through this API on that consultation", state="none"
        )
    await started.hangup()
    return _accepted(call, cid)


async def wrap_up(call: Call) -> Accepted:
    cid = call.param("consultation_id")
    await provider_of(call).wrap_up(cid)
    return _accepted(call, cid)


async def end(call: Call) -> EndAnswer:
    cid = call.param("consultation_id")
    provider = provider_of(call)
    session = provider.session(cid)
    body: EndRequest = call.body
    summary = await provider.end(cid, follow_up_required=body.follow_up_required)
    call.state.calls.pop(cid, None)
    return EndAnswer(
        consultation=consultation_view(session),
        summary=SummaryView(duration=summary.duration, follow_up_required=summary.follow_up_required),
    )


async def invite(call: Call) -> Accepted:
    cid = call.param("consultation_id")
    body: InviteRequest = call.body
    await provider_of(call).invite(cid, body.provider_id, body.role)
    return _accepted(call, cid)


async def remove(call: Call) -> RemoveAnswer:
    cid = call.param("consultation_id")
    body: RemoveRequest = call.body
    return RemoveAnswer(revoked=await provider_of(call).remove(cid, body.provider_id))


_ONE = "/v1/consultations/{consultation_id}"

ROUTES = [
    Route(
        "GET", "/v1/waiting-room", waiting_room, "The patients waiting for this provider, in order",
        "provider", roles=PROVIDER, answer=WaitingRoomAnswer, errors=(503,),
    ),
    Route(
        "POST", "/v1/waiting-room/queue-updates", queue_updates,
        "Send each waiting patient its position and estimated wait", "provider", roles=PROVIDER,
        body=QueueUpdatesRequest, answer=QueueUpdatesAnswer, conflicts=True, errors=(503,),
    ),
    Route(
        "POST", f"{_ONE}/join", join, "Join a waiting patient's consultation", "provider",
        roles=PROVIDER, answer=Accepted, conflicts=True, errors=(404, 503),
    ),
    Route(
        "POST", f"{_ONE}/call", start_call,
        "Call the patient (returns once the offer is out; in-progress once media flows)", "provider",
        roles=PROVIDER, answer=Accepted, conflicts=True, errors=(404, 503),
    ),
    Route(
        "POST", f"{_ONE}/end-call", end_call, "End the call (the consultation goes on)", "provider",
        roles=PROVIDER, answer=Accepted, conflicts=True, errors=(404, 503),
    ),
    Route(
        "POST", f"{_ONE}/wrap-up", wrap_up, "Start wrapping up", "provider",
        roles=PROVIDER, answer=Accepted, conflicts=True, errors=(404, 503),
    ),
    Route(
        "POST", f"{_ONE}/end", end, "End the consultation; answers the summary", "provider",
        roles=PROVIDER, body=EndRequest, answer=EndAnswer, conflicts=True, errors=(404, 503),
    ),
    Route(
        "POST", f"{_ONE}/invite", invite, "Invite another provider (specialist, second opinion, observer)",
        "provider", roles=PROVIDER, body=InviteRequest, answer=Accepted, conflicts=True, errors=(404, 503),
    ),
    Route(
        "POST", f"{_ONE}/remove", remove, "Remove an invited provider and revoke its access",
        "provider", roles=PROVIDER, body=RemoveRequest, answer=RemoveAnswer, conflicts=True,
        errors=(404, 503),
    ),
]  # fmt: skip
