"""The patient endpoint (a kiosk or an exam-room cart): check-in, waiting, leave, resume.

Idle, it holds no token, no bus and no subscription. ``check_in`` asks the clinic for a patient
token (refused without consent), reads the consent itself from App Context, opens a bus under the
patient's user ID, subscribes (consultation, ``.video`` and the patient's notification channel,
with presence) and publishes ``PATIENT_CHECKED_IN`` and ``PATIENT_READY``. From there the
provider drives the consultation; when it completes or is cancelled the session closes (presence
leave, bus closed, token dropped, state file removed) and the endpoint is idle again.

Public API:

- ``PatientEndpoint(connect, hub, state_dir=..., kiosk_id=..., policy=None)``: ``connect`` builds a bus
  for a user ID and holds the kiosk's clinic client (``connector.Connector``).
- ``await check_in(appointment_id=..., patient_id=..., provider_id=..., department_id=...)`` ->
  the ``ConsultationSession``; ``CheckInRefused`` (``field`` and ``reason``) when the consent or
  the clinic refuses, ``InvalidIdError`` naming a bad ID, ``SessionError("busy", ...)`` while a
  consultation is under way. Nothing is published when it is refused.
- ``await read_consent(patient_id=..., provider_id=..., appointment_id=None)`` -> ``ConsentReading``:
  what the clinic says of the patient's consent for such a check-in, without checking in.
- ``await leave()``: ``CONSULTATION_CANCELLED`` ``patient-left``.
- ``await report_devices(report)``: remember the last device check; published as
  ``DEVICE_STATUS`` now (during a consultation) and whenever the verdict changes.
- ``await resume() -> ConsultationSession | None``: the consultation saved in the state
  directory, with a fresh token, the same subscriptions and a catch-up from its last timetoken.
- ``session``, ``idle``, ``await aclose()`` (stops; a consultation under way stays on disk).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from telehealth_client import events
from telehealth_client.audit.auditor import Auditor, audit_token_event
from telehealth_client.connector import Connector
from telehealth_client.consultation import state_file
from telehealth_client.consultation.chat import ConsultationChat
from telehealth_client.consultation.lifecycle import Consultation
from telehealth_client.consultation.session import ConsultationSession, SessionError, now
from telehealth_client.protocol import channels
from telehealth_client.protocol.channels import validate_id
from telehealth_client.protocol.messages import (
    CheckVerdict,
    ConsultationCancelled,
    ConsultationState,
    DeviceStatus,
    Drop,
    Message,
    NetworkVerdict,
    PatientCheckedIn,
    ProviderReady,
    consent_refusal,
    decode_consent,
)
from telehealth_client.pubsub.bus import Bus, BusError, Envelope
from telehealth_client.security import tokens
from telehealth_client.security.clinic_client import ClinicError
from telehealth_client.stop_budgets import FLUSH_SECONDS

if TYPE_CHECKING:  # the devices package loads numpy: not for an agent that only reads its report
    from devices.report import CameraResult, MicrophoneResult, SpeakerResult, Status
    from devices.report import DeviceReport as CheckReport
    from telehealth_client.durability import Durable
    from telehealth_client.media.call_options import MediaOptions
    from telehealth_client.media.consultation_call import ConsultationCall

log = logging.getLogger(__name__)


class CheckInRefused(Exception):
    """Check-in refused; ``field`` and ``reason`` say why (no PHI)."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"check-in refused: {field}: {reason}")
        self.field = field
        self.reason = reason


@dataclass(frozen=True)
class ConsentReading:
    """``read_consent``'s answer: granted (and unexpired), or the refusal's reason."""

    granted: bool
    refusal: str | None = None
    expires_at: datetime | None = None


@dataclass(frozen=True)
class DeviceReport:
    """The verdicts of the kiosk's last device and network check."""

    camera: CheckVerdict
    microphone: CheckVerdict
    speaker: CheckVerdict
    network: NetworkVerdict

    @classmethod
    def from_check(cls, report: CheckReport, network: NetworkVerdict = "unknown") -> DeviceReport:
        """The wire verdicts of a device check (``devices``): a device not checked is ``skipped``."""

        def verdict(step: CameraResult | MicrophoneResult | SpeakerResult | None) -> CheckVerdict:
            return "skipped" if step is None else _VERDICTS[step.status]

        return cls(verdict(report.camera), verdict(report.microphone), verdict(report.speaker), network)


_VERDICTS: dict[Status, CheckVerdict] = {"ok": "pass", "warn": "warn", "fail": "fail"}


class PatientEndpoint:
    def __init__(
        self,
        connect: Connector,
        hub: events.EventHub,
        *,
        state_dir: Path,
        kiosk_id: str,
        policy: tokens.RefreshPolicy | None = None,
        durable: Durable | None = None,
        media: MediaOptions | None = None,
    ) -> None:
        self._connect = connect
        self._durable = durable
        self._media = media
        self._chat: ConsultationChat | None = None
        self._call: ConsultationCall | None = None
        self._hub = hub
        self._state_dir = Path(state_dir)
        self._kiosk_id = validate_id(kiosk_id, "userId")
        self._policy = policy
        self._session: ConsultationSession | None = None
        self._busy = asyncio.Lock()  # one check-in or resume at a time
        self._devices: DeviceReport | None = None
        self._published_devices: DeviceReport | None = None

    @property
    def session(self) -> ConsultationSession | None:
        return self._session

    @property
    def idle(self) -> bool:
        return self._session is None

    @property
    def chat(self) -> ConsultationChat | None:
        """The consultation's chat (None when idle or without durable storage)."""
        session = self._session
        return self._chat if session is not None and not session.closed else None

    @property
    def call(self) -> ConsultationCall | None:
        """The consultation's call (None when idle or without media): it answers by itself."""
        session = self._session
        return self._call if session is not None and not session.closed else None

    def _auditor(self, actor_id: str) -> Auditor | None:
        return None if self._durable is None else self._durable.auditor(actor_id, "patient")

    @property
    def state(self) -> ConsultationState | None:
        return None if self._session is None else self._session.consultation.state

    # -- check-in -----------------------------------------------------------------------------------

    async def check_in(
        self, *, appointment_id: str, patient_id: str, provider_id: str, department_id: str
    ) -> ConsultationSession:
        appointment_id = validate_id(appointment_id, "appointmentId")
        patient_id = validate_id(patient_id, "patientId")
        provider_id = validate_id(provider_id, "providerId")
        department_id = validate_id(department_id, "departmentId")
        async with self._busy:
            if self._session is not None:
                raise SessionError("busy", "a consultation is already under way on this endpoint")
            consultation = Consultation.new(
                consultation_id=channels.consultation(provider_id, patient_id),
                user_id=patient_id,
                role="patient",
                appointment_id=appointment_id,
                department_id=department_id,
            )
            session = await self._open(consultation, catch_up=False, check_consent=True)
            try:
                checked_in = PatientCheckedIn(
                    appointment_id=appointment_id,
                    patient_id=patient_id,
                    consultation_id=consultation.consultation_id,
                    timestamp=now(),
                )
                await session.act(checked_in)
                auditor = self._auditor(patient_id)
                if auditor is not None:
                    await auditor.session_started(consultation.consultation_id)
                if self._devices is not None:
                    await self._publish_devices(session, self._devices)
            except BaseException:
                await session.aclose("check-in-failed")
                raise
            log.info("patient checked in consultation=%s", consultation.consultation_id)
            return session

    async def _open(
        self, consultation: Consultation, *, catch_up: bool, check_consent: bool
    ) -> ConsultationSession:
        patient_id = consultation.patient_id
        bus = self._connect.bus(patient_id)
        session: ConsultationSession | None = None
        keeper: tokens.TokenKeeper | None = None
        try:
            request = tokens.TokenRequest(
                patient_id,
                "patient",
                {"providerId": consultation.provider_id, **_appointment(consultation)},
            )
            holder: list[ConsultationSession] = []
            auditor = self._auditor(patient_id)
            scope = consultation.consultation_id

            def token_event(event: tokens.TokenEvent) -> None:
                if auditor is not None:
                    audit_token_event(auditor, event, scope)
                if holder:
                    holder[0].token_event(event)

            keeper = tokens.TokenKeeper(self._connect.clinic, bus, request, token_event, policy=self._policy)
            try:
                await keeper.start()
            except ClinicError as exc:
                refusal = _refusal(exc)
                if auditor is not None and isinstance(refusal, CheckInRefused):
                    await auditor.consent_checked(patient_id, refusal.reason)
                raise refusal from None
            session = ConsultationSession(
                consultation,
                bus,
                self._hub,
                state_dir=self._state_dir,
                channels=[channels.notification(patient_id)],
                keeper=keeper,
                owns_bus=True,
                on_closed=self._closed,
            )
            holder.append(session)
            session.add_message_handler(_provider_ready_announcer(session, self._hub))
            if check_consent:
                await self._check_consent(bus, patient_id, auditor)
            # Closed first (hooks run in order): the peer hears end-call before the last flush,
            # which then carries the call's end (an audit event) too.
            calls: list[ConsultationCall] = []
            session.add_close_hook(lambda _reason: _close_calls(calls))
            if self._durable is not None and auditor is not None:
                chat = ConsultationChat(
                    session, self._durable.outbox, self._durable.router, self._hub, auditor=auditor
                )
                await chat.start()  # before the session's catch-up, which feeds it
                self._durable.attach(bus, denials=keeper.handle_access_denied)
                session.add_close_hook(self._closing_hook(chat, auditor))
                self._chat = chat
            if self._media is not None:
                from telehealth_client.media.consultation_call import ConsultationCall

                call = ConsultationCall(
                    session,
                    self._connect.clinic,
                    self._hub,
                    options=self._media,
                    auditor=auditor,
                    on_video_mode=self._report_call_network,
                )
                await call.start()  # a warm media child while the patient waits
                calls.append(call)
                self._call = call
            await session.start(catch_up=catch_up)
        except BaseException:
            if session is not None:
                await session.aclose("check-in-failed")
            else:
                if keeper is not None:
                    await keeper.aclose()
                await bus.aclose()
            raise
        self._session = session
        return session

    def _closing_hook(self, chat: ConsultationChat, auditor: Auditor) -> Callable[[str], Awaitable[None]]:
        async def closing(reason: str) -> None:
            over = reason != "stopped"
            if over:
                await auditor.safely("session_ended", chat.consultation_id, reason)
            await chat.aclose(wipe=over)  # the consultation is over: its chat leaves memory and disk
            await auditor.settle()
            if self._durable is not None:
                # What waits (chat, audit events) gets a moment on this bus; the rest goes on the next.
                await self._durable.detach(within=FLUSH_SECONDS)

        return closing

    async def _check_consent(self, bus: Bus, patient_id: str, auditor: Auditor | None) -> None:
        """Consent read by the agent itself (the token server may be wrong): before any publish."""
        try:
            custom = await bus.get_user_metadata(patient_id)
        except BusError as exc:
            raise CheckInRefused("consent", f"could not be read ({exc.reason})") from None
        consent = decode_consent(custom.get("consent_telehealth"))
        if isinstance(consent, Drop):
            refusal = "missing" if consent.reason == "is missing" else "unreadable"
        else:
            refusal = consent_refusal(consent, now()) or ""
        if auditor is not None:
            await auditor.consent_checked(patient_id, refusal or None)
        if refusal:
            log.warning("check-in refused field=consent reason=%s", refusal)
            raise CheckInRefused("consent", refusal)

    async def read_consent(
        self, *, patient_id: str, provider_id: str, appointment_id: str | None = None
    ) -> ConsentReading:
        """What the clinic says of ``patient_id``'s consent for a check-in with ``provider_id``,
        read the way check-in reads it, without checking in: a patient token is asked for (the
        clinic refuses it without consent: ``refusal`` its reason), then the consent record is read
        from App Context with it, and the token dropped. Nothing is published.
        ``InvalidIdError`` names a bad ID; ``ClinicError`` / ``BusError`` when they do not answer."""
        patient_id = validate_id(patient_id, "patientId")
        provider_id = validate_id(provider_id, "providerId")
        if appointment_id is not None:
            appointment_id = validate_id(appointment_id, "appointmentId")
        bus = self._connect.bus(patient_id)
        auditor = self._auditor(patient_id)
        scope = channels.consultation(provider_id, patient_id)

        def token_event(event: tokens.TokenEvent) -> None:
            if auditor is not None:
                audit_token_event(auditor, event, scope)  # a token reached the bus: recorded as always

        context = {"providerId": provider_id, **({"appointmentId": appointment_id} if appointment_id else {})}
        request = tokens.TokenRequest(patient_id, "patient", context)
        keeper = tokens.TokenKeeper(self._connect.clinic, bus, request, token_event, policy=self._policy)
        try:
            try:
                await keeper.start()
            except ClinicError as exc:
                refusal = _refusal(exc)
                if isinstance(refusal, CheckInRefused):
                    return ConsentReading(granted=False, refusal=refusal.reason)
                raise refusal from None
            consent = decode_consent((await bus.get_user_metadata(patient_id)).get("consent_telehealth"))
            if isinstance(consent, Drop):
                return ConsentReading(
                    granted=False, refusal="missing" if consent.reason == "is missing" else "unreadable"
                )
            refusal_code = consent_refusal(consent, now())
            return ConsentReading(
                granted=refusal_code is None, refusal=refusal_code, expires_at=consent.expires_at
            )
        finally:
            await keeper.aclose()
            if auditor is not None:
                await auditor.settle()
            await bus.aclose()

    # -- during the consultation --------------------------------------------------------------------

    async def leave(self) -> None:
        session = self._require()
        patient_id = session.consultation.patient_id
        await session.act(
            ConsultationCancelled(cancelled_by=patient_id, reason="patient-left", timestamp=now())
        )

    async def report_devices(self, report: DeviceReport) -> None:
        self._devices = report
        auditor = self._auditor(self._kiosk_id)
        if auditor is not None:
            await auditor.device_check_completed(
                self._kiosk_id,
                {
                    "camera": report.camera,
                    "microphone": report.microphone,
                    "speaker": report.speaker,
                    "network": report.network,
                },
            )
        session = self._session
        if session is not None and not session.closed and report != self._published_devices:
            await self._publish_devices(session, report)

    async def _report_call_network(self, mode: NetworkVerdict) -> None:
        """The call fell back to audio only, or has video again: the provider is told by the
        network verdict of ``DEVICE_STATUS`` (the devices' verdicts stay what the check found). The
        call's mode is the call's: the check's own verdict stays what the next check-in sends, and
        every change is told, even when it matches what was published last."""
        base = self._devices or DeviceReport("skipped", "skipped", "skipped", "unknown")
        session = self._session
        if session is not None and not session.closed:
            await self._publish_devices(session, replace(base, network=mode))

    async def _publish_devices(self, session: ConsultationSession, report: DeviceReport) -> None:
        status = DeviceStatus(
            camera=report.camera,
            microphone=report.microphone,
            speaker=report.speaker,
            network=report.network,
            timestamp=now(),
        )
        await session.act(status)
        self._published_devices = report

    # -- restart ------------------------------------------------------------------------------------

    async def resume(self) -> ConsultationSession | None:
        """The saved consultation, resumed; None when there is none. StateFileError if unusable."""
        async with self._busy:
            if self._session is not None:
                return self._session
            consultation = await asyncio.to_thread(state_file.load, self._state_dir)
            if consultation is not None and consultation.state.terminal:
                await asyncio.to_thread(state_file.remove, self._state_dir)
                consultation = None
            await self._wipe_leftovers(None if consultation is None else consultation.consultation_id)
            if consultation is None:
                return None
            session = await self._open(consultation, catch_up=True, check_consent=False)
            log.info(
                "consultation resumed consultation=%s state=%s",
                consultation.consultation_id,
                consultation.state,
            )
            return session

    async def _wipe_leftovers(self, keep: str | None) -> None:
        """Chat left in the outbox by a consultation that ended while the agent was down: its
        content must not outlive it (and could only be refused on another patient's bus)."""
        if self._durable is None:
            return
        for consultation_id in {item.consultation_id for item in self._durable.outbox.pending()}:
            if consultation_id and consultation_id != keep:
                await self._durable.outbox.wipe(consultation_id)

    # -- end ----------------------------------------------------------------------------------------

    async def _closed(self, session: ConsultationSession, reason: str) -> None:
        if self._session is session and reason != "stopped":
            self._session = None
            self._chat = None
            self._call = None
            self._published_devices = None
            log.info("patient endpoint idle kiosk=%s reason=%s", self._kiosk_id, reason)
            self._hub.emit(events.EndpointIdle(self._kiosk_id, reason))

    def _require(self) -> ConsultationSession:
        if self._session is None or self._session.closed:
            raise SessionError("idle", "no consultation is under way on this endpoint")
        return self._session

    async def aclose(self) -> None:
        session = self._session
        if session is not None:
            await session.aclose("stopped")


async def _close_calls(calls: list[ConsultationCall]) -> None:
    for call in calls:
        await call.aclose()


def _provider_ready_announcer(
    session: ConsultationSession, hub: events.EventHub
) -> Callable[[Message, Envelope], None]:
    """Emit ``events.ProviderReady`` for each new ``PROVIDER_READY`` from the consultation's own
    provider about this consultation (live or from a catch-up, each once)."""
    newest = 0

    def announce(message: Message, envelope: Envelope) -> None:
        nonlocal newest
        if (
            isinstance(message, ProviderReady)
            and message.consultation_id == session.consultation_id
            and envelope.publisher == session.consultation.provider_id
            and envelope.timetoken > newest
        ):
            newest = envelope.timetoken
            hub.emit(events.ProviderReady(session.consultation_id))

    return announce


def _appointment(consultation: Consultation) -> dict[str, str]:
    return {} if consultation.appointment_id is None else {"appointmentId": consultation.appointment_id}


def _refusal(error: ClinicError) -> CheckInRefused | ClinicError:
    """The clinic's refusal as the check-in's: 403 ``consent: ...`` names the consent's reason."""
    text = str(error)
    if error.status == 403 and "consent:" in text:
        reason = text.split("consent:", 1)[1].split("(HTTP", 1)[0].strip()
        return CheckInRefused("consent", reason)
    return error
