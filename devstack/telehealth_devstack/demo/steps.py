"""The demo's consultation as a list of steps: each acts, then waits for who saw the result.

A step does one thing (check-in, a queue update, join, a chat message, an escalation...) and
then waits for each agent that should see the result to report it through its own ``EventHub``
(``Scene.saw``); what it returns is what those agents saw, described from the events they got.
IDs (chat messages and escalations by the first 8 characters of theirs), states, codes and
counts only: never a token, a key or PHI (the chat texts, the escalation's reason and its
resolution are the demo's own samples, ``SAMPLE_PHI``, and are never printed).

Public API:

- ``Step(name, run)``; ``STEPS``: the consultation, in order (the call joins this list when it
  lands). The last step checks each agent's audit chain (``verify_chain``) and that every event
  each agent recorded is at the clinic's audit sink, once.
- ``Scene(cast, skip_consent=False)``: what the steps share; ``saw(agent, matches, describe)``,
  ``observations``, ``waiting_for`` (what a step was waiting for when its time ran out).
- ``DemoFailure``: a step's result is not what the protocol promises (its text names what).
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Final

from telehealth_client import events
from telehealth_client.consultation.chat import ConsultationChat
from telehealth_client.consultation.roster import ChangeKind, RosterRole
from telehealth_client.consultation.session import now
from telehealth_client.emergency.desk import EmergencyDesk
from telehealth_client.protocol.messages import ConsultationState, ProviderJoined, encode
from telehealth_client.pubsub.bus import AccessDeniedError, ConnectionStatus
from telehealth_devstack.demo.cast import (
    APPOINTMENT,
    CONSULTATION,
    DEPARTMENT,
    KIOSK,
    PATIENT,
    PROVIDER,
    SPECIALIST,
    Cast,
)

S = ConsultationState

# The demo's sample PHI: sent and stored (encrypted) like real PHI, printed and logged never.
QUESTION: Final = "Demo question: my left arm has felt numb since this morning. Is that a concern?"
ANSWER: Final = "Demo answer: please stay seated; I am getting the emergency team to you now."
REASON: Final = "Demo reason: numbness of the left arm, possible stroke or cardiac event."
RESOLUTION: Final = "Demo resolution: the emergency team took over the patient's care in room 4."
SAMPLE_PHI: Final = (QUESTION, ANSWER, REASON, RESOLUTION)
SEVERITY: Final = "critical"
# What the steps pass on to the next ones: the chat's message IDs, the escalation's.
QUESTION_ID: Final = "question"
ANSWER_ID: Final = "answer"
ESCALATION_ID: Final = "escalation"


class DemoFailure(Exception):
    """The step ran but the result is wrong; the text says what (IDs and codes only)."""


@dataclass
class Scene:
    cast: Cast
    skip_consent: bool = False
    observations: list[tuple[str, str]] = field(default_factory=list)
    waiting_for: str | None = None
    ids: dict[str, str] = field(default_factory=dict)  # what a later step needs (a message's ID)
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
    # Times the step timeout this step may take: the call starts two media processes (aiortc's
    # import alone takes seconds on a busy machine) and waits for the far end's first report.
    budget: float = 1.0


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


def short(identifier: str) -> str:
    """A message's or an escalation's ID as printed: enough to tell them apart in one run."""
    return identifier[:8]


def chat_of(scene: Scene, agent: str) -> ConsultationChat:
    if agent == "patient":
        chat = scene.cast.patient.chat
        if chat is None:
            raise DemoFailure("patient: no chat in the consultation")
        return chat
    return scene.cast.provider.chat(CONSULTATION)


def desk_of(scene: Scene, agent: str) -> EmergencyDesk:
    endpoint = scene.cast.provider if agent == "provider" else scene.cast.specialist
    if endpoint.emergency is None:
        raise DemoFailure(f"{agent}: no emergency desk")
    return endpoint.emergency


def message_sent(message_id: str) -> Callable[[Any], bool]:
    return lambda e: (
        isinstance(e, events.ChatStatusChanged) and e.message_id == message_id and e.status == "sent"
    )


def message_added(message_id: str) -> Callable[[Any], bool]:
    return lambda e: isinstance(e, events.ChatMessageAdded) and e.message_id == message_id


def read_up_to(reader_id: str, message_id: str) -> Callable[[Any], bool]:
    return lambda e: (
        isinstance(e, events.ChatReadUpdated) and e.reader_id == reader_id and e.up_to_id == message_id
    )


def escalation_is(
    escalation_id: str, matches: Callable[[events.EmergencyUpdated], bool]
) -> Callable[[Any], bool]:
    return lambda e: (
        isinstance(e, events.EmergencyUpdated) and e.escalation_id == escalation_id and matches(e)
    )


async def chat_message(scene: Scene, sender: str, receiver: str, text: str) -> str:
    """``sender`` writes ``text``; it sees its message sent, ``receiver`` sees it arrive."""
    entry = await chat_of(scene, sender).send(text)
    await scene.saw(
        sender,
        "its message sent",
        message_sent(entry.id),
        lambda _: f"message {short(entry.id)} sent ({len(text)} chars)",
    )

    def arrived(event: events.ChatMessageAdded) -> str:
        shown = chat_of(scene, receiver).get(entry.id)
        if shown is None or shown.text != text or shown.status != "sent":
            raise DemoFailure(f"{receiver}: message {short(entry.id)} is not in its chat as sent")
        return f"message {short(entry.id)} from {event.sender_id}"

    await scene.saw(receiver, f"message {short(entry.id)}", message_added(entry.id), arrived)
    return entry.id


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
    """Without media (a benchmark's cast): the provider starts the consultation itself."""
    await scene.cast.provider.start_consultation(CONSULTATION)
    await both_see(scene, S.IN_PROGRESS)


def media_flowing(kind: str) -> Callable[[Any], bool]:
    return lambda e: (
        isinstance(e, events.MediaFlowing) and e.consultation_id == CONSULTATION and e.media == kind
    )


def measured_quality(e: Any) -> bool:
    """A sample with frames counted and the round trip known (from the far end's first report)."""
    return (
        isinstance(e, events.CallQualityChanged)
        and e.consultation_id == CONSULTATION
        and e.fps > 0
        and e.rtt_ms is not None
    )


def describe_quality(event: events.CallQualityChanged) -> str:
    return (
        f"quality {event.level}/5, {event.fps:.0f} fps {event.width}x{event.height}, "
        f"round trip {event.rtt_ms:.0f} ms"
    )


async def call(scene: Scene) -> None:
    """The provider calls; the kiosk answers by itself; relay-only media both ways, each agent's
    media in its own child process; the patient's media moves the consultation to in-progress."""
    started = time.monotonic()
    placed = await scene.cast.provider.call(CONSULTATION)
    for agent in ("patient", "provider"):
        for kind in ("video", "audio"):
            await scene.saw(
                agent, f"{kind} from the other side", media_flowing(kind), lambda e: f"{e.media} flowing"
            )
    connected_ms = (time.monotonic() - started) * 1000
    await both_see(scene, S.IN_PROGRESS)
    patient_call = scene.cast.patient.call
    workers = {"patient": None if patient_call is None else patient_call.worker, "provider": placed.worker}
    for agent, worker in workers.items():
        if worker is None:
            raise DemoFailure(f"{agent}: no media process for the call")
        stats = await worker.stats()
        received = stats.get("received", {})
        scene.note(
            agent, f"received {received.get('video', 0)} video and {received.get('audio', 0)} audio frames"
        )
    scene.note("provider", f"offer to media both ways in {connected_ms:.0f} ms, relay-only")
    for agent in ("patient", "provider"):
        await scene.saw(agent, "the call's quality measured", measured_quality, describe_quality)


async def patient_asks(scene: Scene) -> None:
    scene.ids[QUESTION_ID] = await chat_message(scene, "patient", "provider", QUESTION)


async def provider_answers(scene: Scene) -> None:
    scene.ids[ANSWER_ID] = await chat_message(scene, "provider", "patient", ANSWER)


async def read_receipts(scene: Scene) -> None:
    """Each reads the other's message; the other sees the receipt and counts it as read."""
    question, answer = scene.ids[QUESTION_ID], scene.ids[ANSWER_ID]
    for reader, reader_id, writer, message_id in (
        ("patient", PATIENT, "provider", answer),
        ("provider", PROVIDER, "patient", question),
    ):
        await chat_of(scene, reader).mark_read(message_id)

        def receipt(event: events.ChatReadUpdated, writer: str = writer, reader_id: str = reader_id) -> str:
            readers = chat_of(scene, writer).read_by(event.up_to_id)
            if reader_id not in readers:
                raise DemoFailure(
                    f"{writer}: message {short(event.up_to_id)} not shown as read by {reader_id}"
                )
            return f"{reader_id} read up to {short(event.up_to_id)}"

        await scene.saw(writer, f"{reader_id}'s receipt", read_up_to(reader_id, message_id), receipt)


async def emergency(scene: Scene) -> None:
    """The provider escalates; it sees the escalation delivered and the other on-call providers
    notified (not itself: it knows); each of them sees the alert on its notification channel."""
    desk = desk_of(scene, "provider")
    escalation = await desk.escalate(CONSULTATION, SEVERITY, REASON)
    scene.ids[ESCALATION_ID] = escalation.id
    on_call = await scene.cast.specialist_clinic.on_call(DEPARTMENT)
    recipients = [user_id for user_id in on_call if user_id != PROVIDER]
    agents = {SPECIALIST: "specialist"}
    if not recipients or any(user_id not in agents for user_id in recipients):
        raise DemoFailure(
            f"clinic: on call for {DEPARTMENT}: {sorted(on_call)}, expected the demo's providers"
        )
    done = escalation_is(escalation.id, lambda e: e.delivered and e.notified is not None)

    def delivered(event: events.EmergencyUpdated) -> str:
        if event.notified != len(recipients):
            raise DemoFailure(
                f"provider: {event.notified} on-call providers notified, expected {len(recipients)}"
            )
        notified = f"{event.notified} on-call notified"
        return f"escalation {short(event.escalation_id)} {event.severity}, delivered, {notified}"

    await scene.saw("provider", "the escalation delivered", done, delivered)
    for user_id in recipients:
        await scene.saw(
            agents[user_id],
            "the on-call alert",
            lambda e: isinstance(e, events.EmergencyAlert) and e.escalation_id == escalation.id,
            lambda e: f"on-call alert {short(e.escalation_id)} ({e.priority})",
        )


async def emergency_resolved(scene: Scene) -> None:
    escalation_id = scene.ids[ESCALATION_ID]
    await desk_of(scene, "provider").resolve(escalation_id, RESOLUTION)
    resolved = escalation_is(escalation_id, lambda e: e.status == "resolved")
    for agent in ("provider", "specialist"):
        await scene.saw(
            agent, "the resolution", resolved, lambda e: f"escalation {short(e.escalation_id)} resolved"
        )
        if any(open_one.id == escalation_id for open_one in desk_of(scene, agent).open):
            raise DemoFailure(f"{agent}: escalation {short(escalation_id)} still open")


def actor_of(event: dict[str, Any]) -> str:
    actor = event.get("actor")
    return str(actor.get("userId")) if isinstance(actor, dict) else "?"


async def audit(scene: Scene) -> None:
    """Each agent's chain intact; every event each recorded at the sink, once, and nothing else."""
    cast = scene.cast
    durables = cast.durables

    def recorded_now() -> dict[str, int]:
        return {name: durable.trail.status().records for name, durable in durables.items()}

    while True:
        recorded = recorded_now()
        for name, durable in durables.items():
            scene.waiting_for = f"{name}: its audit events acknowledged by the sink"
            await durable.trail.wait_delivered(within=3600.0)  # the step's timeout bounds it
        scene.waiting_for = None
        at_sink = await sink_events(cast)
        chains = {name: await d.trail.verify() for name, d in durables.items()}
        # An event recorded meanwhile (a token renewed) is counted on the next pass.
        if recorded_now() == recorded:
            break
    if len({event.get("id") for event in at_sink}) != len(at_sink):
        raise DemoFailure("clinic: an audit event is at the sink more than once")
    if any(text in json.dumps(at_sink) for text in SAMPLE_PHI):
        raise DemoFailure("clinic: an audit event carries chat text or an escalation's reason")
    by_actor = Counter(actor_of(event) for event in at_sink)
    for name, chain in chains.items():
        if not chain.ok:
            raise DemoFailure(f"{name}: audit chain broken: {chain.reason}")
        if chain.records != recorded[name]:
            raise DemoFailure(f"{name}: {chain.records} records verified, {recorded[name]} recorded")
        delivered = sum(by_actor.pop(user_id, 0) for user_id in cast.agent_ids[name])
        if delivered != recorded[name]:
            raise DemoFailure(f"{name}: {recorded[name]} audit events recorded, {delivered} at the sink")
        scene.note(name, f"chain of {chain.records} intact, {delivered} at the sink")
    if by_actor:
        raise DemoFailure(f"clinic: audit events of {sorted(by_actor)} that no agent recorded")
    scene.note("clinic", f"{len(at_sink)} audit events at the sink, each once")


async def sink_events(cast: Cast) -> list[dict[str, Any]]:
    """What the clinic stand-in's audit sink holds (read in-process, as the auditor would)."""
    assert cast.stack.clinic is not None, "stack not started"
    return await cast.stack.clinic.audit_events()


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
    Step("call", call, budget=3.0),
    Step("patient asks", patient_asks),
    Step("provider answers", provider_answers),
    Step("read receipts", read_receipts),
    Step("emergency", emergency),
    Step("emergency resolved", emergency_resolved),
    Step("invite specialist", invite),
    Step("specialist joins", specialist_joins),
    Step("remove specialist", specialist_removed),
    Step("revoked token", revoked_token_refused),
    Step("wrap-up", wrap_up),
    Step("end", end),
    Step("audit", audit),
)
