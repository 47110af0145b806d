"""The consultation's state machine: pure, in the style of PubNub's event engine.

A ``Consultation`` is data. ``transition(consultation, event)`` returns the next consultation and
the effects to run; whoever owns the I/O (the patient or provider side) runs them in order. The
same function validates a side's own intentions: ``plan(consultation, message)`` checks that the
message would be accepted and returns what to publish.

Public API:

- ``Consultation.new(consultation_id=..., user_id=..., role=..., appointment_id=..., department_id=...)``.
- Events: ``Received(message, publisher, timetoken)`` for a lifecycle action or ``QUEUE_UPDATE``
  from the bus (live or caught up from history, own echoes included); ``Published(message,
  timetoken)`` when our own publish succeeded; ``PresenceChanged(event)``.
- Effects: ``Publish(channel, message, store)``, ``Persist(consultation)`` (write the state file),
  ``Emit(event)`` (to ``events.EventHub``), ``CloseSession(reason)`` (the consultation is over for
  this endpoint: unsubscribe, drop the token, remove the state file), ``Ignored(code, text)``
  (nothing changed; log at debug).
- Errors: ``IllegalTransition`` (names the action and both states), ``Forbidden`` (this publisher
  may not publish that), ``Refused`` (wrong consultation, roster rule). Each has a short ``code``
  and a ``text`` that holds no IDs or PHI. Nothing changes when one is raised.
- ``summary_duration(joined_at, ended_at)``: whole minutes, rounded up, at least 1.
- ``RULES`` (message kind -> ``Rule``) and ``GUEST_JOIN``: the lifecycle as one table. Each row
  says who may send the kind, the states it applies in and leads to, its effect and where our own
  goes; ``transition`` and ``plan`` only read it. The named state sets (``WAITING_ROOM``,
  ``PROVIDER_PRESENT``, ``BEFORE_PROVIDER``) are the ones other modules use.

Exactly once, in order: a message is applied when its timetoken is above ``last_timetoken`` (the
stream's high-water mark) and not one of ``own_timetokens`` (our own messages, applied when their
publish succeeded, before the stream delivers their echo). After a restart, catching up from the
saved ``last_timetoken`` re-delivers what was published meanwhile; what was applied is skipped.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Final, NamedTuple, TypeAlias

from telehealth_client import events
from telehealth_client.consultation.roster import (
    INVITED_ROLES,
    MemberStatus,
    Roster,
    RosterChange,
    RosterError,
    RosterRole,
    RosterUpdate,
)
from telehealth_client.protocol import channels
from telehealth_client.protocol.channels import ConsultationChannels, validate_id
from telehealth_client.protocol.messages import (
    CancelReason,
    ConsultationCancelled,
    ConsultationEnded,
    ConsultationInvite,
    ConsultationStarted,
    ConsultationState,
    DeviceStatus,
    LifecycleAction,
    PatientCheckedIn,
    PatientReady,
    ProviderInvited,
    ProviderJoined,
    ProviderReady,
    ProviderRemoved,
    QueueUpdate,
    SenderRole,
    Summary,
    WireModel,
    WrapUpStarted,
)
from telehealth_client.pubsub.bus import PresenceEvent

S = ConsultationState
NON_TERMINAL: Final = frozenset(s for s in ConsultationState if not s.terminal)
PROVIDER_PRESENT: Final = frozenset({S.CONNECTING, S.IN_PROGRESS, S.WRAPPING_UP})
# Own timetokens kept for echo detection; older ones are also below the high-water mark in practice.
MAX_OWN_TIMETOKENS: Final = 256

PATIENT_CANCEL_REASONS: Final[frozenset[CancelReason]] = frozenset(
    {"patient-left", "consent-revoked", "technical"}
)
PROVIDER_CANCEL_REASONS: Final[frozenset[CancelReason]] = frozenset(
    {"provider-cancelled", "no-show", "technical"}
)

StateMessage: TypeAlias = LifecycleAction | QueueUpdate


# ---------------------------------------------------------------------------------------------
# Data


@dataclass(frozen=True)
class Consultation:
    consultation_id: str
    provider_id: str
    patient_id: str
    user_id: str  # this endpoint's own user ID
    role: SenderRole  # this endpoint's own role (an invited specialist is a provider)
    roster: Roster
    appointment_id: str | None = None
    department_id: str | None = None
    state: ConsultationState = S.SCHEDULED
    last_timetoken: int = 0
    own_timetokens: frozenset[int] = frozenset()
    # The check-in's timetoken (an invited provider: its provider's join): where this visit's
    # messages begin on a channel that earlier visits of the same patient also used.
    opened_timetoken: int = 0
    provider_joined_at: datetime | None = None
    queue_position: int | None = None
    estimated_wait_minutes: int | None = None
    device_status: DeviceStatus | None = None
    summary: Summary | None = None
    cancel_reason: CancelReason | None = None

    @classmethod
    def new(
        cls,
        *,
        consultation_id: str,
        user_id: str,
        role: SenderRole,
        appointment_id: str | None = None,
        department_id: str | None = None,
        state: ConsultationState = S.SCHEDULED,
    ) -> Consultation:
        """A new consultation; raises InvalidIdError naming a bad field.

        ``state`` is ``scheduled`` for the patient and the consultation's provider. An invited
        provider joins one already under way: it starts from the state its invitation came in
        and catches up from the invitation's timetoken.
        """
        parsed = ConsultationChannels.parse(consultation_id)
        return cls(
            consultation_id=parsed.main,
            provider_id=parsed.provider_id,
            patient_id=parsed.patient_id,
            user_id=validate_id(user_id, "userId"),
            role=role,
            roster=Roster.for_consultation(parsed.provider_id, parsed.patient_id),
            appointment_id=None if appointment_id is None else validate_id(appointment_id, "appointmentId"),
            department_id=None if department_id is None else validate_id(department_id, "departmentId"),
            state=state,
        )

    def already_applied(self, timetoken: int) -> bool:
        return timetoken <= self.last_timetoken or timetoken in self.own_timetokens


# ---------------------------------------------------------------------------------------------
# Events


@dataclass(frozen=True)
class Received:
    """A message delivered by the bus (live or from history), possibly our own echo."""

    message: StateMessage
    publisher: str
    timetoken: int


@dataclass(frozen=True)
class Published:
    """Our own message, published successfully with ``timetoken``."""

    message: StateMessage
    timetoken: int


@dataclass(frozen=True)
class PresenceChanged:
    event: PresenceEvent


LifecycleEvent: TypeAlias = Received | Published | PresenceChanged


# ---------------------------------------------------------------------------------------------
# Effects


@dataclass(frozen=True)
class Publish:
    channel: str
    message: WireModel
    store: bool = True


@dataclass(frozen=True)
class Persist:
    consultation: Consultation


@dataclass(frozen=True)
class Emit:
    event: events.Event


@dataclass(frozen=True)
class CloseSession:
    reason: str  # "completed", "cancelled" or "removed"


@dataclass(frozen=True)
class Ignored:
    code: str
    text: str


Effect: TypeAlias = Publish | Persist | Emit | CloseSession | Ignored


class Transition(NamedTuple):
    consultation: Consultation
    effects: tuple[Effect, ...]


# ---------------------------------------------------------------------------------------------
# Errors


class TransitionError(Exception):
    """A message refused by the state machine; nothing changed."""

    def __init__(self, code: str, text: str) -> None:
        super().__init__(f"{code}: {text}")
        self.code = code
        self.text = text


class IllegalTransition(TransitionError):
    def __init__(self, action: str, from_state: ConsultationState, to_state: ConsultationState) -> None:
        super().__init__(
            "illegal-transition", f"{action} cannot move a consultation from {from_state} to {to_state}"
        )
        self.action = action
        self.from_state = from_state
        self.to_state = to_state


class Forbidden(TransitionError):
    def __init__(self, action: str, publisher_role: str) -> None:
        super().__init__("forbidden", f"{action} may not be published by the {publisher_role}")
        self.action = action


class Refused(TransitionError):
    pass


# ---------------------------------------------------------------------------------------------
# Helpers


def summary_duration(joined_at: datetime, ended_at: datetime) -> int:
    """Whole minutes from PROVIDER_JOINED to CONSULTATION_ENDED, rounded up, at least 1."""
    seconds = (ended_at - joined_at).total_seconds()
    return max(1, math.ceil(seconds / 60))


def action_of(message: StateMessage) -> str:
    return message.type if isinstance(message, QueueUpdate) else message.action


# ---------------------------------------------------------------------------------------------
# The transition function


def transition(consultation: Consultation, event: LifecycleEvent) -> Transition:
    """The next consultation and the effects to run; raises TransitionError if refused."""
    if isinstance(event, PresenceChanged):
        return _presence(consultation, event.event)
    if isinstance(event, Published):
        if consultation.already_applied(event.timetoken):
            return Transition(consultation, (Ignored("replay", "already applied"),))
        return _apply(consultation, event.message, consultation.user_id, event.timetoken, own=True)
    if consultation.already_applied(event.timetoken):
        # The stream has reached this point: keep the high-water mark moving.
        return Transition(_advanced(consultation, event.timetoken), (Ignored("replay", "already applied"),))
    return _apply(consultation, event.message, event.publisher, event.timetoken, own=False)


def _advanced(consultation: Consultation, timetoken: int) -> Consultation:
    last = max(consultation.last_timetoken, timetoken)
    own = frozenset(t for t in consultation.own_timetokens if t > last)
    if last == consultation.last_timetoken and own == consultation.own_timetokens:
        return consultation
    return replace(consultation, last_timetoken=last, own_timetokens=own)


def _with_own(consultation: Consultation, timetoken: int) -> Consultation:
    own = sorted((*consultation.own_timetokens, timetoken))[-MAX_OWN_TIMETOKENS:]
    return replace(consultation, own_timetokens=frozenset(own))


def _presence(consultation: Consultation, presence: PresenceEvent) -> Transition:
    if presence.channel != consultation.consultation_id:
        return Transition(consultation, (Ignored("other-channel", "presence of another channel"),))
    update = consultation.roster.apply_presence(presence)
    if not update.changes:
        return Transition(consultation, ())
    after = replace(consultation, roster=update.roster)
    return Transition(
        after, (Persist(after), Emit(events.RosterChanged(after.consultation_id, update.changes)))
    )


def publisher_role(consultation: Consultation, publisher: str) -> RosterRole | None:
    """The publisher's role, or None when its messages are to be ignored."""
    member = consultation.roster.member(publisher)
    if member is None or member.status is MemberStatus.REMOVED:
        return None
    return member.role


@dataclass(frozen=True)
class Applied:
    """What one accepted message changes: the consultation after it (its roster included), the
    roster's changes, the events it emits beside the state and roster ones, and whether it closes
    this endpoint's session (``close``: the reason; a terminal state closes it anyway)."""

    consultation: Consultation
    changes: tuple[RosterChange, ...] = ()
    emits: tuple[events.Event, ...] = ()
    close: str | None = None


# A message kind's effect: the consultation already in its target state, the message, its
# publisher, its timetoken. Raises RosterError or Refused.
EffectFn: TypeAlias = Callable[[Consultation, Any, str, int], Applied]
# Where our own message goes, with its companions: the consultation before it, the message.
PublishFn: TypeAlias = Callable[[Consultation, Any], tuple[Publish, ...]]


def _state_only(consultation: Consultation, message: Any, publisher: str, timetoken: int) -> Applied:
    return Applied(consultation)


def _on_consultation(consultation: Consultation, message: Any) -> tuple[Publish, ...]:
    return (Publish(consultation.consultation_id, message),)


@dataclass(frozen=True)
class Rule:
    """One message kind's place in the lifecycle: who may send it (``senders``), the field naming
    its sender, which must be the publisher (``identity``; None: it names none), the states it
    applies in (``from_states``) and the state it leads to (``to_state``; None: the state stays, the
    message changes the roster or the device status only).

    Then the rest of its row: the field naming its consultation, which must be this one
    (``consultation``; None: it names none), the reasons each sender may give in its ``reason``
    field (``reasons``; None: it gives none), what it changes and emits once accepted
    (``effect``) and where our own goes with its companions (``publish``)."""

    senders: frozenset[RosterRole]
    identity: Callable[[Any], str] | None
    from_states: frozenset[ConsultationState]
    to_state: ConsultationState | None
    consultation: Callable[[Any], str] | None = None
    reasons: Mapping[RosterRole, frozenset[CancelReason]] | None = None
    effect: EffectFn = _state_only
    publish: PublishFn = _on_consultation


_PATIENT: Final = frozenset({RosterRole.PATIENT})
_PROVIDER: Final = frozenset({RosterRole.PROVIDER})
WAITING_ROOM: Final = frozenset({S.CHECKED_IN, S.WAITING})  # checked in, no provider yet
CANCEL_REASONS: Final[Mapping[RosterRole, frozenset[CancelReason]]] = {
    RosterRole.PATIENT: PATIENT_CANCEL_REASONS,
    RosterRole.PROVIDER: PROVIDER_CANCEL_REASONS,
}


def _provider_id(message: Any) -> str:
    return str(message.provider_id)


def _consultation_id(message: Any) -> str:
    return str(message.consultation_id)


def _roster(consultation: Consultation, update: RosterUpdate, **fields: Any) -> Applied:
    return Applied(replace(consultation, roster=update.roster, **fields), update.changes)


# -- effects, one per message kind ------------------------------------------------------------


def _checked_in(
    consultation: Consultation, message: PatientCheckedIn, publisher: str, timetoken: int
) -> Applied:
    if consultation.appointment_id not in (None, message.appointment_id):
        raise Refused("wrong-appointment", "PATIENT_CHECKED_IN names another appointment")
    return _roster(
        consultation,
        consultation.roster.join(publisher),
        appointment_id=message.appointment_id,
        opened_timetoken=consultation.opened_timetoken or timetoken,
    )


def _queue_updated(
    consultation: Consultation, message: QueueUpdate, publisher: str, timetoken: int
) -> Applied:
    after = replace(
        consultation, queue_position=message.position, estimated_wait_minutes=message.estimated_wait_minutes
    )
    updated = events.QueueUpdated(
        consultation.consultation_id, message.position, message.estimated_wait_minutes
    )
    return Applied(after, emits=(updated,))


def _provider_joined(
    consultation: Consultation, message: ProviderJoined, publisher: str, timetoken: int
) -> Applied:
    """The consultation's own provider: its join starts the summary's duration."""
    return _roster(consultation, consultation.roster.join(publisher), provider_joined_at=message.timestamp)


def _guest_joined(
    consultation: Consultation, message: ProviderJoined, publisher: str, timetoken: int
) -> Applied:
    return _roster(consultation, consultation.roster.join(publisher))


def _invited(consultation: Consultation, message: ProviderInvited, publisher: str, timetoken: int) -> Applied:
    return _roster(
        consultation, consultation.roster.invite(message.invited_provider_id, RosterRole(message.role))
    )


def _removed(consultation: Consultation, message: ProviderRemoved, publisher: str, timetoken: int) -> Applied:
    applied = _roster(consultation, consultation.roster.remove(message.provider_id))
    if message.provider_id == consultation.user_id and applied.changes:
        return replace(applied, close="removed")
    return applied


def _ended(consultation: Consultation, message: ConsultationEnded, publisher: str, timetoken: int) -> Applied:
    return Applied(replace(consultation, summary=message.summary))


def _cancelled(
    consultation: Consultation,
    message: ConsultationCancelled,
    publisher: str,
    timetoken: int,
) -> Applied:
    after = replace(consultation, cancel_reason=message.reason)
    if message.reason == "patient-left":
        return _roster(after, after.roster.leave(publisher))
    return Applied(after)


def _device_status(
    consultation: Consultation, message: DeviceStatus, publisher: str, timetoken: int
) -> Applied:
    reported = events.DeviceStatusReported(
        consultation.consultation_id, message.camera, message.microphone, message.speaker, message.network
    )
    return Applied(replace(consultation, device_status=message), emits=(reported,))


# -- where our own messages go, one per message kind that goes beyond its consultation's channel --


def _publish_check_in(consultation: Consultation, message: PatientCheckedIn) -> tuple[Publish, ...]:
    """On the provider's waiting room (the patient may not read it), and the provider is told."""
    ready = PatientReady(
        title="Patient Checked In",
        body="Patient is ready for consultation",
        priority="high",
        timestamp=message.timestamp,
        appointment_id=message.appointment_id,
        consultation_id=consultation.consultation_id,
    )
    return (
        Publish(channels.waiting_room(consultation.provider_id), message),
        Publish(channels.notification(consultation.provider_id), ready),
    )


def _publish_queue_update(consultation: Consultation, message: QueueUpdate) -> tuple[Publish, ...]:
    return (Publish(channels.notification(consultation.patient_id), message),)


def _publish_join(consultation: Consultation, message: ProviderJoined) -> tuple[Publish, ...]:
    first = Publish(consultation.consultation_id, message)
    if message.provider_id != consultation.provider_id:
        return (first,)
    ready = ProviderReady(
        title="Your Provider is Ready",
        body="Your consultation is about to begin.",
        priority="high",
        timestamp=message.timestamp,
        consultation_id=consultation.consultation_id,
    )
    return (first, Publish(channels.notification(consultation.patient_id), ready))


def _publish_invitation(consultation: Consultation, message: ProviderInvited) -> tuple[Publish, ...]:
    invite = ConsultationInvite(
        title="Consultation Invitation",
        body=f"You have been invited to join a consultation as {message.role}.",
        priority="high",
        timestamp=message.timestamp,
        consultation_id=consultation.consultation_id,
        invited_by=message.invited_by,
        role=message.role,
    )
    return (
        Publish(consultation.consultation_id, message),
        Publish(channels.notification(message.invited_provider_id), invite),
    )


def _publish_cancel(consultation: Consultation, message: ConsultationCancelled) -> tuple[Publish, ...]:
    first = Publish(consultation.consultation_id, message)
    if message.cancelled_by == consultation.patient_id and consultation.state in BEFORE_PROVIDER:
        # Before a provider joined, the provider's queue learns of it from the waiting room.
        return (first, Publish(channels.waiting_room(consultation.provider_id), message))
    return (first,)


# PROTOCOL.md's lifecycle, one row per message kind (docs/protocol.md, "States and transitions").
RULES: Final[Mapping[type, Rule]] = {
    PatientCheckedIn: Rule(
        _PATIENT,
        lambda m: m.patient_id,
        frozenset({S.SCHEDULED}),
        S.CHECKED_IN,
        consultation=_consultation_id,
        effect=_checked_in,
        publish=_publish_check_in,
    ),
    QueueUpdate: Rule(
        _PROVIDER,
        None,
        WAITING_ROOM,
        S.WAITING,
        consultation=_consultation_id,
        effect=_queue_updated,
        publish=_publish_queue_update,
    ),
    ProviderJoined: Rule(
        _PROVIDER, _provider_id, WAITING_ROOM, S.CONNECTING, effect=_provider_joined, publish=_publish_join
    ),
    ConsultationStarted: Rule(_PROVIDER, _provider_id, frozenset({S.CONNECTING}), S.IN_PROGRESS),
    WrapUpStarted: Rule(_PROVIDER, _provider_id, frozenset({S.CONNECTING, S.IN_PROGRESS}), S.WRAPPING_UP),
    ConsultationEnded: Rule(_PROVIDER, _provider_id, NON_TERMINAL, S.COMPLETED, effect=_ended),
    ConsultationCancelled: Rule(
        _PATIENT | _PROVIDER,
        lambda m: m.cancelled_by,
        NON_TERMINAL,
        S.CANCELLED,
        reasons=CANCEL_REASONS,
        effect=_cancelled,
        publish=_publish_cancel,
    ),
    ProviderInvited: Rule(
        _PROVIDER,
        lambda m: m.invited_by,
        PROVIDER_PRESENT,
        None,
        effect=_invited,
        publish=_publish_invitation,
    ),
    ProviderRemoved: Rule(_PROVIDER, lambda m: m.removed_by, PROVIDER_PRESENT, None, effect=_removed),
    DeviceStatus: Rule(_PATIENT, None, NON_TERMINAL, None, effect=_device_status),
}
# An invited provider's own PROVIDER_JOINED: the roster only, while the consultation's provider is there.
GUEST_JOIN: Final = Rule(INVITED_ROLES, _provider_id, PROVIDER_PRESENT, None, effect=_guest_joined)
# Before the consultation's provider joined: what may be checked in, or may join from the waiting room.
BEFORE_PROVIDER: Final = RULES[PatientCheckedIn].from_states | RULES[ProviderJoined].from_states


def rule_for(message: StateMessage, role: RosterRole | None) -> Rule:
    if isinstance(message, ProviderJoined) and role in INVITED_ROLES:
        return GUEST_JOIN
    return RULES[type(message)]


def _target(
    consultation: Consultation, message: StateMessage, rule: Rule, role: RosterRole, publisher: str
) -> ConsultationState:
    """The state ``message`` from ``publisher`` (in ``role``) leads to, or why it may not."""
    action = action_of(message)
    # Decode checks the identity field against the publisher; a Published event has no decode
    # step, and the state machine must not depend on the caller having decoded.
    if rule.identity is not None and rule.identity(message) != publisher:
        raise Refused("forged-sender", f"{action} names a sender other than its publisher")
    if role not in rule.senders:
        raise Forbidden(action, str(role))
    if rule.reasons is not None and getattr(message, "reason", None) not in rule.reasons[role]:
        raise Refused("forbidden-reason", f"{action} with this reason may not come from the {role}")
    current = consultation.state
    target = current if rule.to_state is None else rule.to_state
    if current not in rule.from_states:
        raise IllegalTransition(action, current, target)
    return target


def _is_duplicate_end(consultation: Consultation, rule: Rule) -> bool:
    """The same ending seen twice (the patient's cancel goes on two channels)."""
    return rule.to_state is not None and rule.to_state.terminal and consultation.state is rule.to_state


def _apply(
    consultation: Consultation, message: StateMessage, publisher: str, timetoken: int, *, own: bool
) -> Transition:
    role = publisher_role(consultation, publisher)
    if role is None:
        ignored = Ignored("unknown-publisher", "publisher is not an active member of this consultation")
        return Transition(_advanced(consultation, timetoken) if not own else consultation, (ignored,))
    rule = rule_for(message, role)
    if _is_duplicate_end(consultation, rule):
        ignored = Ignored("duplicate-end", "the consultation has already ended this way")
        return Transition(_advanced(consultation, timetoken) if not own else consultation, (ignored,))
    if rule.consultation is not None and rule.consultation(message) != consultation.consultation_id:
        raise Refused("wrong-consultation", f"{action_of(message)} names another consultation")
    target = _target(consultation, message, rule, role, publisher)
    try:
        applied = rule.effect(replace(consultation, state=target), message, publisher, timetoken)
    except RosterError as exc:
        raise Refused(exc.code, f"{action_of(message)}: {exc.text}") from None

    after = applied.consultation
    after = _with_own(after, timetoken) if own else _advanced(after, timetoken)
    effects: list[Effect] = [Persist(after)]
    if target is not consultation.state:
        effects.append(
            Emit(
                events.StateChanged(
                    consultation.consultation_id,
                    consultation.state,
                    target,
                    timetoken,
                    summary=after.summary if target is S.COMPLETED else None,
                    cancel_reason=after.cancel_reason if target is S.CANCELLED else None,
                )
            )
        )
    if applied.changes:
        effects.append(Emit(events.RosterChanged(consultation.consultation_id, applied.changes)))
    effects.extend(Emit(event) for event in applied.emits)
    close = str(target) if target.terminal else applied.close
    if close is not None:
        effects.append(CloseSession(close))
    return Transition(after, tuple(effects))


# ---------------------------------------------------------------------------------------------
# Own intentions


def plan(consultation: Consultation, message: StateMessage) -> tuple[Publish, ...]:
    """What to publish for our own ``message``; raises TransitionError if it would be refused.

    The first Publish carries ``message`` itself: once it succeeds, feed
    ``Published(message, timetoken)`` to ``transition``, then publish the rest (notifications,
    the waiting-room copy of an early cancel).
    """
    probe = max(consultation.last_timetoken, *consultation.own_timetokens, 0) + 1
    transition(consultation, Published(message, probe))  # raises if refused; result discarded
    role = publisher_role(consultation, consultation.user_id)
    return rule_for(message, role).publish(consultation, message)


__all__ = [
    "CloseSession",
    "Consultation",
    "Effect",
    "Emit",
    "Forbidden",
    "Ignored",
    "IllegalTransition",
    "LifecycleEvent",
    "Persist",
    "PresenceChanged",
    "Publish",
    "Published",
    "Received",
    "Refused",
    "Transition",
    "TransitionError",
    "action_of",
    "plan",
    "summary_duration",
    "transition",
]
