"""Muting the call: this end's microphone sends silence and its camera black frames, or not.

The kiosk mutes its one call (``POST /v1/call/mute``); a cart the call it started through the API on
the consultation named in the path, as its other call routes do. Without a call under way: 409
``no-call`` with the consultation's state.
"""

from __future__ import annotations

from typing import Any

from telehealth_client.api.errors import ApiError
from telehealth_client.api.models import MuteAnswer, MuteRequest
from telehealth_client.api.routes_patient import patient_of
from telehealth_client.api.routes_previews import LIVE_PHASES
from telehealth_client.api.routes_provider import provider_of
from telehealth_client.api.routing import PATIENT, PROVIDER, Call, Route, current_state
from telehealth_client.api.views import mute_state


def _no_call(call: Call, consultation_id: str | None) -> ApiError:
    state = current_state(call.agent, consultation_id)
    return ApiError(409, "no-call", "there is no call under way to mute", state=state)


async def _muted(call: Call, consultation_id: str, media: Any) -> MuteAnswer:
    if media is None or str(media.phase) not in LIVE_PHASES:
        raise _no_call(call, consultation_id)
    body: MuteRequest = call.body
    await media.set_mute(audio=body.audio, video=body.video)
    return MuteAnswer(consultation_id=consultation_id, muted=mute_state(media))


async def mute_kiosk_call(call: Call) -> MuteAnswer:
    patient = patient_of(call)
    session = patient.session
    if session is None:
        raise _no_call(call, None)
    return await _muted(call, session.consultation.consultation_id, patient.call)


async def mute_cart_call(call: Call) -> MuteAnswer:
    cid = call.param("consultation_id")
    provider_of(call).session(cid)  # 404 for a consultation this cart does not hold
    return await _muted(call, cid, call.state.calls.get(cid))


_SUMMARY = "Mute (true) or unmute (false) this end's microphone (audio) or camera (video); the mute state"

ROUTES = [
    Route(
        "POST",
        "/v1/call/mute",
        mute_kiosk_call,
        _SUMMARY + " (the kiosk's call)",
        "call",
        roles=PATIENT,
        body=MuteRequest,
        answer=MuteAnswer,
        conflicts=True,
    ),
    Route(
        "POST",
        "/v1/consultations/{consultation_id}/mute",
        mute_cart_call,
        _SUMMARY + " (the call this cart started on that consultation)",
        "call",
        roles=PROVIDER,
        body=MuteRequest,
        answer=MuteAnswer,
        conflicts=True,
        errors=(404,),
    ),
]
