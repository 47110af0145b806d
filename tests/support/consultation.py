"""Whole consultations on the real development stack (relay enforcing Access Manager, coturn, the
clinic stand-in, through ``DevStack``), with real ``PubNubBus`` clients and real endpoints: ``Parts``
builds them and closes what it built (the ``parts`` fixture, ``tests/integration/conftest.py``).

Events are recorded by an ``EventHub`` that also keeps every event it emits (``RecordingHub``), so a
test waits for the event it needs with a timeout, never a sleep; ``LogLines`` does the same for log
records.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from telehealth_client import events
from telehealth_client.audit.trail import ChainKeys
from telehealth_client.connector import Connector
from telehealth_client.consultation.patient import PatientEndpoint
from telehealth_client.consultation.provider import MAX_FOLLOWED_CONSULTATIONS, ProviderEndpoint
from telehealth_client.consultation.session import ConsultationSession
from telehealth_client.durability import Durable
from telehealth_client.media.consultation_call import MediaOptions
from telehealth_client.protocol.messages import ConsultationState, QueueUpdate
from telehealth_client.pubsub.pubnub_bus import BusConfig, PubNubBus
from telehealth_client.security.clinic_client import ClinicClient, TokenGrant, TurnCredentials
from telehealth_client.security.tokens import RefreshPolicy
from telehealth_devstack.stack import DevStack
from tests.support.recorder import Recorder

PROVIDER = "dr-lee"
SPECIALIST = "dr-okafor"
DEPARTMENT = "er"
PATIENT = "pat-1"
KIOSK = "kiosk-1"
APPOINTMENT = "appt-1"
CONSULTATION = f"consultation.{PROVIDER}.{PATIENT}"
WAIT = 15.0


class RecordingHub(Recorder, events.EventHub):
    """The real hub, keeping what it emitted for the test to wait on (``tests.support.recorder``)."""

    def __init__(self) -> None:
        Recorder.__init__(self)
        events.EventHub.__init__(self)

    def emit(self, event: events.Event) -> None:
        self.add(event)
        events.EventHub.emit(self, event)

    async def wait_for(
        self, matches: Callable[[Any], bool], count: int = 1, within: float = WAIT
    ) -> list[Any]:
        return await Recorder.wait_for(self, matches, count, within)

    async def wait_state(self, state: ConsultationState, within: float = WAIT) -> events.StateChanged:
        found = await self.wait_for(
            lambda e: isinstance(e, events.StateChanged) and e.state is state, within=within
        )
        return found[0]  # type: ignore[no-any-return]

    def call_statuses(self, consultation_id: str = CONSULTATION) -> list[str]:
        """The call's one status at each change of it (media/call_status.py; the status is told
        again when only its media changed: audio arrived before video)."""
        told = [
            e.status
            for e in self.items
            if isinstance(e, events.CallStatusChanged) and e.consultation_id == consultation_id
        ]
        return [status for i, status in enumerate(told) if i == 0 or told[i - 1] != status]

    def states(self, consultation_id: str = CONSULTATION) -> list[str]:
        return [
            str(e.state)
            for e in self.items
            if isinstance(e, events.StateChanged) and e.consultation_id == consultation_id
        ]


class RecordingClinic(ClinicClient):
    """The real clinic client, remembering the tokens it was given (a test reuses a revoked one)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.tokens: list[tuple[str | None, str]] = []  # (consultationChannel asked for, token)
        self.turn_grants = 0
        self.turn_granted = asyncio.Event()

    async def turn_credentials(self, user_id: str) -> TurnCredentials:
        grant = await super().turn_credentials(user_id)
        self.turn_grants += 1
        self.turn_granted.set()
        return grant

    async def request_token(self, user_id: str, role: str, **context: str | None) -> TokenGrant:
        grant = await super().request_token(user_id, role, **context)
        self.tokens.append((context.get("consultationChannel"), grant.token))
        return grant

    def token_for(self, consultation_id: str) -> str:
        return next(token for channel, token in self.tokens if channel == consultation_id)


def bus_template(stack: DevStack, user_id: str) -> BusConfig:
    return stack.bus_config(
        user_id, reconnect_min_seconds=0.05, reconnect_max_seconds=0.5, request_timeout_seconds=5.0
    )


@dataclass
class DurablePair:
    """The kiosk's patient and a provider, each with its own outbox and audit trail."""

    patient: PatientEndpoint
    provider: ProviderEndpoint
    kiosk_store: Durable
    provider_store: Durable


class Parts:
    """Builds endpoints on the stack; closes everything it built."""

    def __init__(self, stack: DevStack, tmp_path: Path) -> None:
        self.stack = stack
        self.tmp_path = tmp_path
        self._closers: list[Callable[[], Any]] = []
        self.clinics: dict[str | None, RecordingClinic] = {}  # the last one built per user

    def clinic(self, user_id: str | None = None, url: str | None = None) -> RecordingClinic:
        """``url``: the clinic through another route (a ``CuttableLink``)."""
        assert self.stack.clinic is not None
        client = RecordingClinic(url or self.stack.clinic.url, self.device_credential(user_id))
        self._closers.append(client.aclose)
        self.clinics[user_id] = client
        return client

    def device_credential(self, user_id: str | None = None) -> str:
        """``user_id``'s device credential (None: the kiosk's)."""
        return self.stack.kiosk_credential() if user_id is None else self.stack.users[user_id].credential

    def connector(self, user_id: str | None = None, clinic_url: str | None = None, **bus: Any) -> Connector:
        """``bus``: ``BusConfig`` fields to change (an ``origin`` through a ``CuttableLink``)."""
        template = replace(bus_template(self.stack, user_id or KIOSK), **bus)
        return Connector(template, self.clinic(user_id, clinic_url))

    async def durable(self, name: str, user_id: str | None = None, **options: Any) -> Durable:
        """The outbox and audit trail of one agent, in ``tmp_path/name``: sealed with the stack's
        cipher key, the audit sink reached with ``user_id``'s credential (None: the kiosk's)."""
        opened = await Durable.open(
            self.tmp_path / name,
            secret=self.stack.keys.cipher_key,
            organization_id=self.stack.organization_id,
            device_id=user_id or KIOSK,
            audit_keys=ChainKeys(self.device_credential(user_id)),
            sink=self.clinic(user_id),
            **options,
        )
        self._closers.append(opened.aclose)
        return opened

    async def record_consent(
        self, granted: bool = True, expires_at: str | None = None, patient: str = PATIENT
    ) -> None:
        await self.clinic().record_consent(patient, granted, expires_at)

    def patient(
        self,
        hub: events.EventHub,
        *,
        state_dir: Path | None = None,
        policy: RefreshPolicy | None = None,
        durable: Durable | None = None,
        media: MediaOptions | None = None,
        clinic_url: str | None = None,
        **bus: Any,
    ) -> PatientEndpoint:
        endpoint = PatientEndpoint(
            self.connector(None, clinic_url, **bus),
            hub,
            state_dir=state_dir or self.tmp_path / "kiosk",
            kiosk_id=KIOSK,
            policy=policy,
            durable=durable,
            media=media,
        )
        self._closers.append(endpoint.aclose)
        return endpoint

    async def provider(
        self,
        hub: events.EventHub,
        user_id: str = PROVIDER,
        policy: RefreshPolicy | None = None,
        durable: Durable | None = None,
        media: MediaOptions | None = None,
        state_dir: Path | None = None,
        max_consultations: int = MAX_FOLLOWED_CONSULTATIONS,
        wildcard_subscribe: bool = True,
        **bus: Any,
    ) -> ProviderEndpoint:
        endpoint = ProviderEndpoint(
            self.connector(user_id, **bus),
            hub,
            user_id=user_id,
            department_id=DEPARTMENT,
            state_dir=state_dir or self.tmp_path / user_id,
            policy=policy,
            durable=durable,
            media=media,
            max_consultations=max_consultations,
            wildcard_subscribe=wildcard_subscribe,
        )
        self._closers.append(endpoint.aclose)
        await endpoint.start()
        return endpoint

    async def consented_pair(self) -> tuple[RecordingHub, RecordingHub, ProviderEndpoint, PatientEndpoint]:
        """The provider started and the patient built, each on its own hub, the patient's consent
        recorded in between: ``provider_hub, patient_hub, provider, patient``."""
        provider_hub, patient_hub = RecordingHub(), RecordingHub()
        provider = await self.provider(provider_hub)
        await self.record_consent()
        return provider_hub, patient_hub, provider, self.patient(patient_hub)

    async def durable_pair(
        self,
        patient_hub: RecordingHub,
        provider_hub: RecordingHub,
        *,
        patient: dict[str, Any] | None = None,
        provider: dict[str, Any] | None = None,
    ) -> DurablePair:
        """``consented_pair`` with an outbox and audit trail each: the provider started with its own
        in ``provider-state``, the patient's consent recorded, the patient built with the kiosk's in
        ``kiosk-state``; ``patient``, ``provider``: more options for either (``origin``, ``media``)."""
        provider_store = await self.durable("provider-state", PROVIDER)
        kiosk_store = await self.durable("kiosk-state")
        started = await self.provider(provider_hub, durable=provider_store, **(provider or {}))
        await self.record_consent()
        built = self.patient(patient_hub, durable=kiosk_store, **(patient or {}))
        return DurablePair(built, started, kiosk_store, provider_store)

    def raw_bus(self, user_id: str, token: str | None) -> PubNubBus:
        bus = PubNubBus(replace(bus_template(self.stack, user_id), token=token))
        self._closers.append(bus.aclose)
        return bus

    async def aclose(self) -> None:
        for closer in reversed(self._closers):
            await closer()


def patient_agent_environment(stack: DevStack, state_dir: Path, **extra: str) -> dict[str, str]:
    """The settings of the kiosk's patient agent on ``stack`` (``TELEHEALTH_*``), plus ``extra``."""
    return {
        **stack.agent_environment(),
        "TELEHEALTH_USER_ID": KIOSK,
        "TELEHEALTH_ROLE": "patient",
        "TELEHEALTH_STATE_DIR": str(state_dir),
        **extra,
    }


def provider_agent_environment(stack: DevStack, state_dir: Path, **extra: str) -> dict[str, str]:
    """The settings of the provider's cart agent on ``stack`` (``TELEHEALTH_*``), plus ``extra``."""
    return {**stack.agent_environment(PROVIDER), "TELEHEALTH_STATE_DIR": str(state_dir), **extra}


def queue_update(position: int, minutes: int) -> QueueUpdate:
    return QueueUpdate(
        title="Queue Update",
        body="",
        priority="normal",
        timestamp=datetime.now(UTC),
        consultation_id=CONSULTATION,
        position=position,
        estimated_wait_minutes=minutes,
    )


def added(sender: str) -> Callable[[Any], bool]:
    return lambda e: isinstance(e, events.ChatMessageAdded) and e.sender_id == sender


def sent(message_id: str) -> Callable[[Any], bool]:
    return lambda e: (
        isinstance(e, events.ChatStatusChanged) and e.message_id == message_id and e.status == "sent"
    )


def read(reader: str, up_to: str) -> Callable[[Any], bool]:
    return lambda e: isinstance(e, events.ChatReadUpdated) and e.reader_id == reader and e.up_to_id == up_to


# The kiosk's check-in for the consultation: ``patient.check_in(**CHECK_IN)``, and as an agent
# child's command, ``child.command("check-in", **AGENT_CHECK_IN)``.
CHECK_IN = {
    "appointment_id": APPOINTMENT,
    "patient_id": PATIENT,
    "provider_id": PROVIDER,
    "department_id": DEPARTMENT,
}
AGENT_CHECK_IN = {
    "appointmentId": APPOINTMENT,
    "patientId": PATIENT,
    "providerId": PROVIDER,
    "departmentId": DEPARTMENT,
}


NURSE = "nurse-kim"


def nurse_stack() -> DevStack:
    """A development stack with the provider and one nurse, ``NURSE``, of the department."""
    return DevStack(providers=(PROVIDER,), nurses=(NURSE,))


async def checked_in(patient: PatientEndpoint, provider_hub: RecordingHub) -> ConsultationSession:
    """The patient checks in (``CHECK_IN``), and the provider has seen it."""
    session = await patient.check_in(**CHECK_IN)
    await provider_hub.wait_state(ConsultationState.CHECKED_IN)
    return session


async def check_in_and_join(
    patient: PatientEndpoint,
    provider: ProviderEndpoint,
    patient_hub: RecordingHub,
    provider_hub: RecordingHub,
) -> ConsultationSession:
    """The patient checks in (``CHECK_IN``) and the provider joins: the consultation is connecting."""
    session = await checked_in(patient, provider_hub)
    await provider.join(CONSULTATION)
    await patient_hub.wait_state(ConsultationState.CONNECTING)
    return session


async def check_in_and_wait(
    patient: PatientEndpoint,
    provider: ProviderEndpoint,
    patient_hub: RecordingHub,
    provider_hub: RecordingHub,
) -> ConsultationSession:
    """The patient checks in (``CHECK_IN``) and is told its place in the queue: it is waiting."""
    session = await checked_in(patient, provider_hub)
    await provider.send_queue_updates()
    await patient_hub.wait_state(ConsultationState.WAITING)
    return session
