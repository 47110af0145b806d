"""A call between a patient endpoint and a provider endpoint over PubNub signaling (the real relay,
clinic stand-in and coturn): the provider calls, the patient answers, the right video flows both
ways relay-only; signals from a third user, malformed SDP and candidates change nothing; end-call
ends both sides once."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime

import pytest
from aiortc import AudioStreamTrack

from telehealth_client import events
from telehealth_client.consultation.provider import ProviderEndpoint
from telehealth_client.consultation.session import ConsultationSession
from telehealth_client.media.call import MediaCall, TurnConfig
from telehealth_client.media.signaling import CallSignaling
from telehealth_client.protocol.messages import ConsultationState as S
from telehealth_client.pubsub.pubnub_bus import PubNubBus
from tests.support.consultation import (
    CHECK_IN,
    CONSULTATION,
    PATIENT,
    PROVIDER,
    Parts,
    RecordingHub,
    bus_template,
)
from tests.support.logs import LogLines
from tests.support.media import Receiver, turn_config

from .numbered import NumberedVideoTrack

pytestmark = pytest.mark.integration

VIDEO = f"{CONSULTATION}.video"
WAIT = 20.0


class Side:
    def __init__(self, parts: Parts, user_id: str, session: ConsultationSession, hub: RecordingHub) -> None:
        self.hub = hub
        self.frames = Receiver(20)
        self.calls: list[MediaCall] = []
        clinic = parts.clinic(None if user_id == PATIENT else user_id)

        self.turn_requests = 0
        # The first credentials handed out, expired or refused, when a test says so.
        self.first_turn: TurnConfig | None = None

        async def turn(*, fresh: bool = False) -> TurnConfig:
            self.turn_requests += 1
            if self.turn_requests == 1 and self.first_turn is not None:
                return self.first_turn
            grant = await clinic.turn_credentials(user_id)
            return TurnConfig(tuple(grant.urls), grant.username, grant.credential)

        async def media(config: TurnConfig) -> MediaCall:
            first = 1 if user_id == PATIENT else 1000
            call = MediaCall(
                config, tracks=[NumberedVideoTrack(first), AudioStreamTrack()], on_frame=self.frames
            )
            self.calls.append(call)
            return call

        self.signaling = CallSignaling(
            session,
            polite=user_id == PATIENT,
            turn_source=turn,
            media_factory=media,
            hub=hub,
            accepting=lambda: session.consultation.state in (S.CONNECTING, S.IN_PROGRESS),
        )


async def waiting_sides(parts: Parts) -> tuple[Side, Side, ProviderEndpoint]:
    """Both sides' signaling started on a checked-in consultation the provider has not joined."""
    provider_hub, patient_hub, provider, patient = await parts.consented_pair()
    session = await patient.check_in(**CHECK_IN)
    await provider_hub.wait_state(S.CHECKED_IN)
    patient_side = Side(parts, PATIENT, session, patient_hub)
    provider_side = Side(parts, PROVIDER, provider.session(CONSULTATION), provider_hub)
    await patient_side.signaling.start()
    await provider_side.signaling.start()
    return patient_side, provider_side, provider


async def connected_sides(parts: Parts) -> tuple[Side, Side]:
    patient_side, provider_side, provider = await waiting_sides(parts)
    await provider.join(CONSULTATION)
    await patient_side.hub.wait_state(S.CONNECTING)
    return patient_side, provider_side


def offer_shaped_sdp() -> str:
    """Shaped like a real offer (it passes the SDP gate), so that who sent it is what refuses it."""
    fingerprint = "a=fingerprint:sha-256 " + ":".join(["AB"] * 32)
    lines = ["v=0", "m=video 9 UDP/TLS/RTP/SAVPF 96", "a=ice-ufrag:abcd", "a=ice-pwd:" + "p" * 24]
    return "\r\n".join([*lines, fingerprint, ""])


def phase(name: str) -> object:
    return lambda e: isinstance(e, events.CallStateChanged) and e.phase == name


async def test_the_provider_calls_and_video_flows_both_ways_relay_only(parts: Parts) -> None:
    patient, provider = await connected_sides(parts)
    try:
        await provider.signaling.call(PATIENT)
        await asyncio.wait_for(asyncio.gather(patient.frames.done.wait(), provider.frames.done.wait()), WAIT)
        assert patient.signaling.phase == "connected" and provider.signaling.phase == "connected"
        assert all(n >= 1000 for n in patient.frames.numbers)
        assert all(n < 1000 for n in provider.frames.numbers)
        assert patient.frames.numbers == sorted(patient.frames.numbers)

        await provider.signaling.hangup()
        await patient.hub.wait_for(phase("ended"))
        assert provider.signaling.phase == "ended" and patient.signaling.media is None
    finally:
        await patient.signaling.aclose()
        await provider.signaling.aclose()


async def test_forged_malformed_and_early_signals_change_nothing(parts: Parts, log_lines: LogLines) -> None:
    patient, provider = await connected_sides(parts)
    # A third user with the keys' own authority (signed with the secret key, so Access Manager lets
    # it publish): the patient's agent must still refuse to answer it.
    forger = PubNubBus(
        replace(bus_template(parts.stack, "dr-mallory"), secret_key=parts.stack.keys.secret_key)
    )
    now = datetime.now(UTC).isoformat()
    try:
        offer = {"type": "offer", "senderId": "dr-mallory", "timestamp": now, "sdp": offer_shaped_sdp()}
        await forger.publish(VIDEO, offer, store=False)
        await log_lines.wait_line("signal ignored", "code=not-a-participant")
        for bad in (
            {"type": "offer", "senderId": PROVIDER, "timestamp": now, "sdp": "not sdp"},
            {"type": "offer", "senderId": PROVIDER, "timestamp": now, "sdp": 42},
            {"type": "ice-candidate", "senderId": PROVIDER, "timestamp": now, "candidate": "x" * 5000},
            {"type": "nonsense", "senderId": PROVIDER, "timestamp": now, "payload": list(range(1000))},
        ):
            await provider.signaling._session.bus.publish(VIDEO, bad, store=False)
        await log_lines.wait_line("signal dropped", "field=sdp")
        await log_lines.wait_line("dropped", "field=candidate")
        await log_lines.wait_line("dropped", "field=type")
        assert patient.signaling.phase == "idle" and patient.signaling.media is None
        # The call still works afterwards.
        await provider.signaling.call(PATIENT)
        await asyncio.wait_for(patient.frames.done.wait(), WAIT)
    finally:
        await forger.aclose()
        await patient.signaling.aclose()
        await provider.signaling.aclose()


async def test_an_end_call_from_the_patient_ends_both_sides_and_is_not_echoed(parts: Parts) -> None:
    patient, provider = await connected_sides(parts)
    try:
        await provider.signaling.call(PATIENT)
        await asyncio.wait_for(patient.frames.done.wait(), WAIT)
        await patient.signaling.hangup()
        await provider.hub.wait_for(phase("ended"))
        assert provider.signaling.media is None
        # The provider never published an end-call of its own: the patient saw none come back.
        assert patient.signaling.phase == "ended"
    finally:
        await patient.signaling.aclose()
        await provider.signaling.aclose()


async def test_credentials_expired_on_the_first_try_are_fetched_afresh_and_the_call_connects(
    parts: Parts,
) -> None:
    patient, provider = await connected_sides(parts)
    turn = parts.stack.turn
    assert turn is not None
    expired = turn_config(turn, PROVIDER, expired=True)
    provider.first_turn = expired
    patient.first_turn = TurnConfig(expired.urls, expired.username, "wrong")
    try:
        await provider.signaling.call(PATIENT)
        await asyncio.wait_for(asyncio.gather(patient.frames.done.wait(), provider.frames.done.wait()), WAIT)
        assert provider.turn_requests == 2 and patient.turn_requests == 2
    finally:
        await patient.signaling.aclose()
        await provider.signaling.aclose()


async def test_a_turn_server_that_is_down_fails_the_call_with_its_reason(parts: Parts) -> None:
    patient, provider = await connected_sides(parts)
    turn = parts.stack.turn
    assert turn is not None
    await turn.stop()
    try:
        await asyncio.wait_for(provider.signaling.call(PATIENT), 10.0)  # no hang: within 10 s
        [ended] = await provider.hub.wait_for(phase("ended"))
        assert ended.reason == "TURN server unreachable"
        assert provider.signaling.phase == "ended" and provider.signaling.media is None
        # Its end-call told the patient's side, which never had a call to end: nothing changed there.
        assert patient.signaling.phase == "idle"
    finally:
        await patient.signaling.aclose()
        await provider.signaling.aclose()


# -- an offer before the join (PROTOCOL.md: held up to 5 s for the provider's join) -----------------


async def test_the_providers_offer_that_overtakes_its_join_is_held_and_answered_once_it_joins(
    parts: Parts, log_lines: LogLines
) -> None:
    patient, provider, endpoint = await waiting_sides(parts)
    try:
        await provider.signaling.call(PATIENT)  # the offer is out before PROVIDER_JOINED
        await log_lines.wait_line("offer held for the provider's join", f"consultation={CONSULTATION}")
        # Held, not answered: no camera goes to someone who has not joined.
        assert patient.signaling.phase == "idle" and patient.signaling.media is None
        assert patient.calls == [] and patient.turn_requests == 0
        await endpoint.join(CONSULTATION)
        await asyncio.wait_for(asyncio.gather(patient.frames.done.wait(), provider.frames.done.wait()), WAIT)
        assert patient.signaling.phase == "connected" and provider.signaling.phase == "connected"
        assert len(patient.calls) == 1  # answered once
    finally:
        await patient.signaling.aclose()
        await provider.signaling.aclose()


async def test_an_early_offer_without_a_join_in_time_or_from_another_user_is_never_answered(
    parts: Parts, log_lines: LogLines
) -> None:
    patient, provider, _ = await waiting_sides(parts)
    forger = PubNubBus(
        replace(bus_template(parts.stack, "dr-mallory"), secret_key=parts.stack.keys.secret_key)
    )
    try:
        now = datetime.now(UTC).isoformat()
        offer = {"type": "offer", "senderId": "dr-mallory", "timestamp": now, "sdp": offer_shaped_sdp()}
        await forger.publish(VIDEO, offer)
        await log_lines.wait_line("signal dropped", "reason=an offer before the consultation is connecting")
        await provider.signaling.call(PATIENT)  # the provider's own, but it never joins
        await log_lines.wait_line("held for the provider's join: no join in time", within=WAIT)
        assert patient.signaling.phase == "idle" and patient.signaling.media is None
        assert patient.calls == [] and patient.turn_requests == 0
    finally:
        await forger.aclose()
        await patient.signaling.aclose()
        await provider.signaling.aclose()
