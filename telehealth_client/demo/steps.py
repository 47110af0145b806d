"""The demo's consultation as a list of steps: each acts, then waits for who saw the result.

A step does one thing (check-in, a queue update, join...) and then waits for each agent that
should see the resulting state or roster change to report it through its own ``EventHub``
(``Scene.saw``); what it returns is what those agents saw, described from the events they got.
IDs, states and codes only: never a token, a key or PHI.

Public API:

- ``Step(name, run)``; ``STEPS``: the consultation, in order (chat, audit and the call join
  this list as they land).
- ``Scene(cast, skip_consent=False)``: what the steps share; ``saw(agent, matches, describe)``,
  ``observations``, ``waiting_for`` (what a step was waiting for when its time ran out).
- ``DemoFailure``: a step's result is not what the protocol promises (its text names what).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from telehealth_client import events
from telehealth_client.consultation.roster import ChangeKind, RosterRole
from telehealth_client.consultation.session import now
from telehealth_client.demo.cast import (
    APPOINTMENT,
    CONSULTATION,
    DEPARTMENT,
    KIOSK,
    PATIENT,
    PROVIDER,
    SPECIALIST,
    Cast,
)
from telehealth_client.protocol.messages import ConsultationState, ProviderJoined, encode
from telehealth_client.pubsub.bus import AccessDeniedError, ConnectionStatus

S = ConsultationState


class DemoFailure(Exception):
    """The step ran but the result is wrong; the text says what (IDs and codes only)."""


@dataclass
class Scene:
    cast: Cast
    skip_consent: bool = False
    observations: list[tuple[str, str]] = field(default_factory=list)
    waiting_for: str | None = None
    _marks: dict[str, int] = field(default_factory=dict)

    def begin(self) -> None:
        """A new step: forget the last one's observations; only events from now on count."""
        self.observations = []
        self.waiting_for = None
        self._marks = {name: witness.mark() for name, witness in self.cast.witnesses.items()}

    async def saw(
        self, agent: str, expected: str, matches: Callable[[Any], bool], describe: Callable[[Any], str]
    ) -> Any:
        """Wait until ``agent``'s hub emits an event that ``matches``; record ``describe(event)``."""
        self.waiting_for = f"{agent}: {expected}"
        sighting = await self.cast.witnesses[agent].seen(matches, after=self._marks.get(agent, 0))
        self.waiting_for = None
        self.observations.append((agent, describe(sighting.event)))
        return sighting.event

    def note(self, agent: str, what: str) -> None:
        """Something observed directly rather than through a hub (a bus status, a refusal)."""
        self.observations.append((agent, what))


@dataclass(frozen=True)
class Step:
    name: str
    run: Callable[[Scene], Awaitable[None]]


# -- matching events ----------------------------------------------------------------------------------


def state_is(state: ConsultationState) -> Callable[[Any], bool]:
    return lambda e: (
        isinstance(e, events.StateChanged) and e.consultation_id == CONSULTATION and e.state is state
    )


def roster_change(user_id: str, kind: ChangeKind) -> Callable[[Any], bool]:
    return lambda e: (
        isinstance(e, events.RosterChanged)
        and e.consultation_id == CONSULTATION
        and any(c.user_id == user_id and c.kind is kind for c in e.changes)
    )


def describe_state(event: events.StateChanged) -> str:
    return str(event.state)


def describe_roster(user_id: str) -> Callable[[events.RosterChanged], str]:
    def describe(event: events.RosterChanged) -> str:
        change = next(c for c in event.changes if c.user_id == user_id)
        return f"{user_id} {change.kind} as {change.role}"

    return describe


def is_queue_update(e: Any) -> bool:
    return isinstance(e, events.QueueUpdated) and e.consultation_id == CONSULTATION


def describe_queue(event: events.QueueUpdated) -> str:
    return f"position {event.position}, ~{event.estimated_wait_minutes} min wait"


async def both_see(scene: Scene, state: ConsultationState) -> None:
    await scene.saw("patient", str(state), state_is(state), describe_state)
    await scene.saw("provider", str(state), state_is(state), describe_state)


# -- the steps ----------------------------------------------------------------------------------------


async def stack(scene: Scene) -> None:
    await scene.cast.start_stack()
    relay = scene.cast.stack.relay.origin
    scene.note("stack", f"relay {relay} (Access Manager on), clinic stand-in, coturn")


async def agents(scene: Scene) -> None:
    cast = scene.cast
    await cast.start_agents()
    for name, endpoint in (("provider", cast.provider), ("specialist", cast.specialist)):
        if endpoint.bus.status is not ConnectionStatus.CONNECTED:
            raise DemoFailure(f"{name}: bus {endpoint.bus.status}, not connected")
        scene.note(name, f"{endpoint.user_id} connected, standing token")
    if not cast.patient.idle:
        raise DemoFailure("patient: the kiosk is not idle")
    scene.note("patient", f"{KIOSK} idle (no token, no subscription)")


async def consent(scene: Scene) -> None:
    if scene.skip_consent:
        scene.note("clinic", f"no consent recorded for {PATIENT} (--skip-consent)")
        return
    recorded = await scene.cast.kiosk_clinic.record_consent(PATIENT, True, None)
    if not recorded.granted:
        raise DemoFailure("clinic: consent not recorded as granted")
    scene.note("clinic", f"telehealth consent of {PATIENT} granted (kiosk credential)")


async def check_in(scene: Scene) -> None:
    cast = scene.cast
    await cast.patient.check_in(
        appointment_id=APPOINTMENT, patient_id=PATIENT, provider_id=PROVIDER, department_id=DEPARTMENT
    )
    await scene.saw("patient", "checked-in", state_is(S.CHECKED_IN), describe_state)

    def in_queue(_: events.StateChanged) -> str:
        queue = [waiting.patient_id for waiting in cast.provider.queue]
        if PATIENT not in queue:
            raise DemoFailure(f"provider: {PATIENT} checked in but is not in its queue")
        return f"patient {PATIENT} in queue (position {queue.index(PATIENT) + 1})"

    await scene.saw("provider", f"patient {PATIENT} in queue", state_is(S.CHECKED_IN), in_queue)


async def queue_update(scene: Scene) -> None:
    sent = await scene.cast.provider.send_queue_updates(minutes_per_patient=5)
    if sent != 1:
        raise DemoFailure(f"provider: {sent} queue updates sent, expected 1")
    await scene.saw("patient", "a queue update", is_queue_update, describe_queue)
    if scene.cast.patient.state is not S.WAITING:
        raise DemoFailure(f"patient: {scene.cast.patient.state} after a queue update, expected waiting")
    await scene.saw(
        "provider", "its queue update applied", is_queue_update, lambda e: "sent " + describe_queue(e)
    )


async def join(scene: Scene) -> None:
    await scene.cast.provider.join(CONSULTATION)
    await both_see(scene, S.CONNECTING)


async def start(scene: Scene) -> None:
    await scene.cast.provider.start_consultation(CONSULTATION)
    await both_see(scene, S.IN_PROGRESS)


async def invite(scene: Scene) -> None:
    await scene.cast.provider.invite(CONSULTATION, SPECIALIST, "specialist")
    await scene.saw(
        "specialist",
        "the invitation",
        lambda e: isinstance(e, events.InvitationReceived) and e.consultation_id == CONSULTATION,
        lambda e: f"invited by {e.invited_by} as {e.role}",
    )
    invited = roster_change(SPECIALIST, ChangeKind.INVITED)
    await scene.saw("patient", f"{SPECIALIST} invited", invited, describe_roster(SPECIALIST))
    await scene.saw("provider", f"{SPECIALIST} invited", invited, describe_roster(SPECIALIST))


async def specialist_joins(scene: Scene) -> None:
    session = await scene.cast.specialist.accept(CONSULTATION)
    joined = roster_change(SPECIALIST, ChangeKind.JOINED)
    await scene.saw(
        "specialist", "its own join", joined, lambda _: f"joined, consultation {session.consultation.state}"
    )
    await scene.saw("patient", f"{SPECIALIST} joined", joined, describe_roster(SPECIALIST))
    await scene.saw("provider", f"{SPECIALIST} joined", joined, describe_roster(SPECIALIST))
    patient_session = scene.cast.patient.session
    member = None if patient_session is None else patient_session.consultation.roster.member(SPECIALIST)
    if member is None or member.role is not RosterRole.SPECIALIST:
        raise DemoFailure(f"patient: {SPECIALIST} is not in the roster as specialist")


async def specialist_removed(scene: Scene) -> None:
    revoked = await scene.cast.provider.remove(CONSULTATION, SPECIALIST)
    removed = roster_change(SPECIALIST, ChangeKind.REMOVED)
    await scene.saw("patient", f"{SPECIALIST} removed", removed, describe_roster(SPECIALIST))
    await scene.saw(
        "provider",
        f"{SPECIALIST} removed",
        removed,
        lambda e: f"{describe_roster(SPECIALIST)(e)}, {revoked} token(s) revoked",
    )
    await scene.saw(
        "specialist",
        "its session closed",
        lambda e: isinstance(e, events.SessionClosed) and e.consultation_id == CONSULTATION,
        lambda e: f"left the consultation ({e.reason})",
    )


async def revoked_token_refused(scene: Scene) -> None:
    """The token the specialist held for the consultation, used once more: Access Manager refuses."""
    token = scene.cast.specialist_clinic.consultation_token(CONSULTATION)
    if token is None:
        raise DemoFailure("specialist: no consultation token was granted")
    bus = scene.cast.bus(SPECIALIST, token)
    try:
        await bus.publish(CONSULTATION, encode(ProviderJoined(provider_id=SPECIALIST, timestamp=now())))
    except AccessDeniedError:
        scene.note("specialist", "PROVIDER_JOINED with its consultation token refused (HTTP 403)")
    else:
        raise DemoFailure("specialist: a publish with the revoked token was accepted")
    finally:
        await bus.aclose()


async def wrap_up(scene: Scene) -> None:
    await scene.cast.provider.wrap_up(CONSULTATION)
    await both_see(scene, S.WRAPPING_UP)


async def end(scene: Scene) -> None:
    summary = await scene.cast.provider.end(CONSULTATION, follow_up_required=True)

    def completed(event: events.StateChanged) -> str:
        if event.summary != summary:
            raise DemoFailure("patient: the summary it received differs from the provider's")
        follow_up = "follow-up required" if summary.follow_up_required else "no follow-up"
        return f"completed, {summary.duration} min, {follow_up}"

    await scene.saw("patient", "completed", state_is(S.COMPLETED), completed)
    await scene.saw("provider", "completed", state_is(S.COMPLETED), describe_state)
    await scene.saw(
        "patient",
        "idle again",
        lambda e: isinstance(e, events.EndpointIdle),
        lambda e: f"{e.user_id} idle again",
    )


STEPS: tuple[Step, ...] = (
    Step("stack", stack),
    Step("agents", agents),
    Step("consent", consent),
    Step("check-in", check_in),
    Step("queue update 1", queue_update),
    Step("queue update 2", queue_update),
    Step("join", join),
    Step("start", start),
    Step("invite specialist", invite),
    Step("specialist joins", specialist_joins),
    Step("remove specialist", specialist_removed),
    Step("revoked token", revoked_token_refused),
    Step("wrap-up", wrap_up),
    Step("end", end),
)
