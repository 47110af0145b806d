"""The clinic backend stand-in: PROTOCOL.md's "Clinic backend" table on 127.0.0.1.

FOR DEVELOPMENT AND TESTS ONLY. Endpoints (all need ``Authorization: Bearer <device credential>``).

Each device credential is bound to a ``DeviceIdentity``: a provider's or a nurse's cart acts only
as its one user in its role; a patient check-in kiosk's credential is bound to the kiosk's device ID
and acts for patients (user IDs the clinic knows neither as staff nor as a device) and for that
device ID. The caller is whoever the credential says, never what the request claims. An unknown
credential gets 401; a credential that may not do what is asked gets 403 naming the field and the
reason.

- ``POST /api/telemedicine/token`` ``{userId, role, appointmentId?, consultationChannel?, providerId?,
  departmentId?}`` -> ``{token, ttlMinutes, channelConfig}`` with the permissions of PROTOCOL.md's
  "Token permissions by role" (``devstack.grants``). ``role`` must be the credential's role and
  ``userId`` its user (a patient for a kiosk).

  - patient: ``providerId`` or ``consultationChannel``, whose provider must be a provider of the
    directory (403 naming that field otherwise); 403 ``userId`` for a staff member's or a device's
    ID (the kiosk's own included); refused 403 ``consent: missing | not granted | expired`` unless
    the clinic's consent record is granted and unexpired. Each kiosk's credential mints at most
    ``patient_token_limit``; beyond it 429 ``rateLimit`` with ``Retry-After`` (whole seconds).
  - provider or nurse: ``departmentId``, which must be its own in the clinic's directory. Without
    ``consultationChannel``: the standing token. With one: a provider's own consultation gives
    the standing token naming it; another provider's needs a standing invitation (403
    ``consultationChannel`` otherwise) and adds that consultation; a nurse's must be one of a
    provider in its department assigned to that nurse (403 ``consultationChannel`` otherwise) and
    adds that consultation and the provider's waiting room.
- ``POST /api/telemedicine/turn-credentials`` ``{userId}`` -> ``{urls, username, credential, ttlSeconds}``;
  ``userId`` must be one the credential may act for (a kiosk: a patient or its own device ID).
- ``POST /api/telemedicine/revoke-access`` ``{userId, consultationChannel}`` -> 200 ``{revoked: N}``,
  the number of tokens revoked; ``userId``'s invitation or assignment to the consultation, if any,
  ends too. The clinic keeps no consultation state: it works the same after the consultation ended.
  The credential must be the consultation's provider's (the provider ID in the channel name).
  An ``X-User-Id`` header, if sent, must name that same provider (it identifies no one by itself).
- ``POST /api/telemedicine/invite`` ``{consultationChannel, invitedProviderId, role}`` (``role``
  ``specialist``, ``second-opinion`` or ``observer``) -> 201 ``{consultationChannel,
  invitedProviderId, role, invitedBy}``. The credential must be the consultation's provider's
  (``X-User-Id``, if sent, must name it); ``invitedProviderId`` a provider in the directory, not
  the consultation's own. Inviting again replaces the role.
- ``POST /api/telemedicine/assign`` ``{consultationChannel, nurseId}`` -> 201 ``{consultationChannel,
  nurseId, assignedBy}``. The credential must be the consultation's provider's (``X-User-Id``, if
  sent, must name it); ``nurseId`` a nurse of the directory (400 otherwise) in that provider's
  department (403 otherwise).
- ``POST /api/telemedicine/consent`` ``{patientId, granted, expiresAt}`` (``expiresAt`` ISO-8601 UTC
  or null) -> 200 ``{patientId, consent}``; writes App Context ``custom.consent_telehealth`` and the
  clinic's own record. Only a patient kiosk's credential may, and only for a patient's ID.
- ``GET /api/on-call/{departmentId}`` -> ``{providers: [{id}]}`` (empty for an unknown department).
- ``POST /api/audit-events``, ``GET /api/audit-events/head?deviceId=`` and the auditors'
  ``GET /api/audit-events``: see ``audit_sink``.

Every answer carries CORS headers and an ``OPTIONS`` preflight is answered without a credential,
as the relay does, so a provider page on another origin can fetch its token and TURN credentials.

``organization_id``: the one organization this clinic serves; it names the audit channel
(``audit.{organizationId}``) in every token and in ``channelConfig.auditChannel``. Agents are
configured with the same ID (``TELEHEALTH_ORGANIZATION_ID``).

``token_ttl_minutes``: a TTL per role instead of the grant rules' (tests use PubNub's minimum,
1 minute, to watch tokens being refreshed); roles not named keep theirs.

``clock`` (seconds since the epoch): the time grant requests are signed with, issued tokens
expire by and the patient token limit refills by; tests give it the relay's manual clock.

``patient_token_limit``: how many patient tokens each kiosk's credential may mint (a minute's rate
and a burst); tests and benchmarks that check in many patients at once raise it.

``state_dir``: the issued-token ledger, invitations, assignments and consent (``clinic.sqlite3``)
and the audit sink (``audit.sqlite3``) live there, so a restart on the same directory revokes what was issued
before it. None keeps everything in memory.

Bad input gets 400 naming the field; a PubNub failure gets 502. Nothing logged holds a token,
a key, a credential or a patient's data.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar

from aiohttp import web

from telehealth_client.protocol.channels import ConsultationChannels, InvalidIdError, validate_id

from ..grants import ROLES, GrantRequestError, RoleGrant, build_grant, parse_consultation
from ..http_guard import GuardedAppRunner
from ..turn import turn_rest_credentials
from .assignments import ASSIGNMENT_SCHEMA, Assignment, AssignmentStore
from .audit_sink import AuditSink
from .consent_store import CONSENT_SCHEMA, ConsentStore, consent_refusal
from .directory import Directory, StaffMember
from .http import (
    GUARD,
    FieldError,
    cors_middleware,
    device_auth_middleware,
    device_identity,
    error_response,
    parse_body,
)
from .identity import DeviceIdentity, KnownIds, NotAllowed
from .invitations import INVITATION_SCHEMA, Invitation, InvitationStore
from .ledger import LEDGER_SCHEMA, TokenLedger
from .models import (
    AssignRequest,
    ConsentRequest,
    InviteRequest,
    RevokeAccessRequest,
    TokenRequest,
    TurnCredentialsRequest,
)
from .pubnub_admin import PubNubAdmin, UpstreamError
from .rate_limit import DEFAULT_PATIENT_TOKEN_LIMIT, RateLimit, RateLimited, RateLimiter
from .sqlite_worker import SqliteWorker

logger = logging.getLogger(__name__)
T = TypeVar("T")

CALLER_HEADER = "X-User-Id"
MAX_BODY_BYTES = 64 * 1024
MAX_TOKEN_TTL_MINUTES = 43_200  # PubNub's limit: 30 days
DEFAULT_ORGANIZATION = "org-dev"


def _roster(on_call: Mapping[str, Sequence[str]]) -> dict[str, list[str]]:
    roster: dict[str, list[str]] = {}
    for department, providers in on_call.items():
        validate_id(department, "on_call department")
        roster[department] = [validate_id(p, f"on_call[{department}] provider") for p in providers]
    return roster


def _token_ttls(overrides: Mapping[str, int]) -> dict[str, int]:
    for role, minutes in overrides.items():
        if role not in ROLES:
            raise ValueError(f"token_ttl_minutes: {role!r} is not a role ({', '.join(ROLES)})")
        if (
            isinstance(minutes, bool)
            or not isinstance(minutes, int)
            or not 1 <= minutes <= MAX_TOKEN_TTL_MINUTES
        ):
            raise ValueError(
                f"token_ttl_minutes[{role}]: must be a whole number of minutes"
                f" from 1 to {MAX_TOKEN_TTL_MINUTES}"
            )
    return dict(overrides)


def _check_staff_in_directory(identities: Iterable[DeviceIdentity], directory: Directory) -> None:
    """A provider's or nurse's credential without a directory entry could never get a token; a kiosk
    whose device ID is a staff member's would act for that member as "its own device"."""
    for identity in identities:
        member = directory.member(identity.user_id)
        if identity.role in ("provider", "nurse") and (member is None or member.role != identity.role):
            raise ValueError(
                f"directory has no {identity.role} {identity.user_id!r} (its device credential needs one)"
            )
        if identity.is_patient_kiosk and member is not None:
            raise ValueError(f"kiosk device ID {identity.user_id!r} is a staff member's user ID")


class Clinic:
    """The stand-in server; ``async with Clinic(...) as clinic`` serves on ``clinic.url``."""

    def __init__(
        self,
        relay_origin: str,
        publish_key: str,
        subscribe_key: str,
        secret_key: str,
        device_credentials: Mapping[str, DeviceIdentity],
        turn_secret: str,
        turn_urls: Sequence[str],
        on_call: Mapping[str, Sequence[str]],
        state_dir: Path | None = None,
        *,
        directory: Mapping[str, StaffMember] | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        turn_ttl_seconds: int = 3600,
        token_ttl_minutes: Mapping[str, int] | None = None,
        clock: Callable[[], float] = time.time,
        organization_id: str = DEFAULT_ORGANIZATION,
        patient_token_limit: RateLimit = DEFAULT_PATIENT_TOKEN_LIMIT,
    ) -> None:
        if not device_credentials:
            raise ValueError("device_credentials must hold at least one credential")
        if any(not credential for credential in device_credentials):
            raise ValueError("a device credential must not be empty")
        if any(not isinstance(identity, DeviceIdentity) for identity in device_credentials.values()):
            raise TypeError("each device credential must map to a DeviceIdentity")
        if turn_ttl_seconds <= 0:
            raise ValueError("turn_ttl_seconds must be positive")
        self._directory = Directory(directory or {})
        _check_staff_in_directory(device_credentials.values(), self._directory)
        self._device_credentials = dict(device_credentials)
        self._turn_secret = turn_secret
        self._turn_urls = list(turn_urls)
        self._turn_ttl = turn_ttl_seconds
        self._token_ttls = _token_ttls(token_ttl_minutes or {})
        try:
            self._organization_id = validate_id(organization_id, "organization_id")
        except InvalidIdError as exc:
            raise ValueError(f"organization_id {exc.reason}") from None
        self._on_call = _roster(on_call)
        self._host = host
        self._requested_port = port
        self._admin = PubNubAdmin(
            origin=relay_origin,
            publish_key=publish_key,
            subscribe_key=subscribe_key,
            secret_key=secret_key,
            clock=clock,
        )
        self._state_dir = state_dir
        self._known = KnownIds.of(self._directory.user_ids(), self._device_credentials.values())
        self._audit = AuditSink(
            None if state_dir is None else state_dir / "audit.sqlite3", self._organization_id, self._known
        )
        self._records = SqliteWorker(
            None if state_dir is None else state_dir / "clinic.sqlite3",
            LEDGER_SCHEMA + CONSENT_SCHEMA + INVITATION_SCHEMA + ASSIGNMENT_SCHEMA,
            "clinic",
        )
        self.ledger = TokenLedger(self._records, clock)
        self._consents = ConsentStore(self._records)
        self._invitations = InvitationStore(self._records)
        self._assignments = AssignmentStore(self._records)
        self._patient_token_limit = patient_token_limit
        self._patient_tokens = RateLimiter(patient_token_limit, clock)
        self._clock = clock
        # Granting and revoking take turns: a token granted while a revoke runs would escape it.
        self._grants_lock = asyncio.Lock()
        self._runner: GuardedAppRunner | None = None
        self._port: int | None = None

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("Clinic is not started")
        return self._port

    @property
    def url(self) -> str:
        return f"http://{self._host}:{self.port}"

    async def start(self) -> None:
        if self._runner is not None:
            raise RuntimeError("Clinic is already started")
        try:
            if self._state_dir is not None:
                await asyncio.to_thread(self._state_dir.mkdir, mode=0o700, parents=True, exist_ok=True)
            await self._audit.open()
            await self._records.open()
            await self.ledger.load()
            await self._admin.start()
            # No access log (paths and queries can hold IDs and tokens); what aiohttp refuses
            # itself is answered in JSON with CORS headers and logged by type only.
            runner = GuardedAppRunner(self._app(), guard=GUARD)
            self._runner = runner
            await runner.setup()
            site = web.TCPSite(runner, self._host, self._requested_port)
            await site.start()
            self._port = runner.addresses[0][1]
        except BaseException:
            await self.stop()
            raise
        logger.info("clinic_started port=%d", self._port)

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        try:
            if runner is not None:
                await runner.cleanup()
        finally:
            try:
                await self._admin.stop()
            finally:
                try:
                    await self._records.close()
                finally:
                    await self._audit.close()
        self._port = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # -- for tests and the devstack command ------------------------------------------------

    async def audit_events(self) -> list[dict[str, Any]]:
        """Every audit event the sink stored, oldest first, as received."""
        return await self._audit.store.events()

    async def consent(self, patient_id: str) -> dict[str, Any] | None:
        """The clinic's own consent record of ``patient_id`` (None if never recorded)."""
        return await self._consents.get(patient_id)

    async def invitation_stands(self, consultation_channel: str, provider_id: str) -> bool:
        """True while ``provider_id``'s invitation to the consultation stands."""
        return await self._invitations.get(consultation_channel, provider_id) is not None

    async def assignment_stands(self, consultation_channel: str, nurse_id: str) -> bool:
        """True while ``nurse_id`` is assigned to the consultation."""
        return await self._assignments.get(consultation_channel, nurse_id) is not None

    def set_on_call(self, department_id: str, provider_ids: Sequence[str]) -> None:
        self._on_call.update(_roster({department_id: provider_ids}))

    # -- HTTP ------------------------------------------------------------------------------

    def _app(self) -> web.Application:
        app = web.Application(
            middlewares=[cors_middleware, device_auth_middleware(self._device_credentials)],
            client_max_size=MAX_BODY_BYTES,
        )
        app.add_routes(
            [
                web.post("/api/telemedicine/token", self._token),
                web.post("/api/telemedicine/turn-credentials", self._turn_credentials),
                web.post("/api/telemedicine/revoke-access", self._revoke_access),
                web.post("/api/telemedicine/invite", self._invite),
                web.post("/api/telemedicine/assign", self._assign),
                web.post("/api/telemedicine/consent", self._consent),
                web.get("/api/on-call/{departmentId}", self._on_call_roster),
                *self._audit.routes(),
            ]
        )
        return app

    async def _token(self, request: web.Request) -> web.Response:
        body = await parse_body(request, TokenRequest)
        caller = device_identity(request)
        caller.check_token_request(body.userId, body.role, self._known)
        if caller.is_patient_kiosk:
            try:
                self._patient_tokens.take(caller.user_id)
            except RateLimited as exc:
                return self._too_many_patient_tokens(exc.retry_after)
        try:
            grant = build_grant(
                user_id=body.userId,
                role=body.role,
                organization_id=self._organization_id,
                consultation_channel=body.consultationChannel,
                provider_id=body.providerId,
                department_id=body.departmentId,
            )
        except GrantRequestError as exc:
            raise FieldError(exc.field, exc.reason) from None
        if grant.role in self._token_ttls:
            grant = dataclasses.replace(grant, ttl_minutes=self._token_ttls[grant.role])
        provider_field = "providerId" if body.providerId is not None else "consultationChannel"
        async with self._grants_lock:
            await self._check_may_have(grant, body.departmentId, provider_field)
            token = await self._upstream(self._admin.grant(grant))
            await self.ledger.record(
                token, grant.authorized_uuid, grant.role, grant.consultation_channel, grant.ttl_minutes
            )
        logger.info(
            "clinic_token_granted role=%s ttl_minutes=%d names_consultation=%s",
            grant.role,
            grant.ttl_minutes,
            grant.consultation_channel is not None,
        )
        return web.json_response(
            {"token": token, "ttlMinutes": grant.ttl_minutes, "channelConfig": grant.channel_config}
        )

    def _too_many_patient_tokens(self, retry_after: int) -> web.Response:
        limit = self._patient_token_limit
        logger.warning("clinic_patient_tokens_rate_limited retry_after=%d", retry_after)
        reason = (
            f"this kiosk's credential asked for more than {limit.per_minute:g} patient tokens a minute"
            f" (at most {limit.burst} at once); retry after {retry_after} s"
        )
        return error_response(429, [("rateLimit", reason)], headers={"Retry-After": str(retry_after)})

    async def _check_may_have(self, grant: RoleGrant, department_id: str | None, provider_field: str) -> None:
        """NotAllowed unless the caller may have ``grant``: provider, consent, department, invitation,
        assignment. ``provider_field``: the request field a patient token's provider came from."""
        if grant.role == "patient":
            if grant.consultation_channel is None:  # a patient token always names its consultation
                raise FieldError("consultationChannel", "is required for role patient")
            provider_id = ConsultationChannels.parse(grant.consultation_channel).provider_id
            if not self._directory.is_provider(provider_id):
                # Not another patient, not a nurse: the token writes that user's notification
                # channel and waiting room, which only a provider's patients may.
                raise NotAllowed(provider_field, "is not a provider in the clinic's directory")
            now = datetime.fromtimestamp(self._clock(), UTC)
            refusal = consent_refusal(await self._consents.get(grant.authorized_uuid), now)
            if refusal is not None:
                raise NotAllowed("consent", refusal)
            return
        if department_id is None:  # build_grant requires it for staff
            raise FieldError("departmentId", f"is required for role {grant.role}")
        consultation = (
            None
            if grant.consultation_channel is None
            else ConsultationChannels.parse(grant.consultation_channel)
        )
        self._directory.check_staff_token(grant.authorized_uuid, grant.role, department_id, consultation)
        if (
            grant.role == "provider"
            and consultation is not None
            and consultation.provider_id != grant.authorized_uuid
            and await self._invitations.get(consultation.main, grant.authorized_uuid) is None
        ):
            raise NotAllowed(
                "consultationChannel", "has no standing invitation for this provider from its provider"
            )
        if (
            grant.role == "nurse"
            and consultation is not None
            and await self._assignments.get(consultation.main, grant.authorized_uuid) is None
        ):
            raise NotAllowed(
                "consultationChannel", "is not assigned to this nurse by its provider (or no longer)"
            )

    def _check_is_patient(self, user_id: str, field: str) -> None:
        """A kiosk acts for patients, never as staff or a device: a patient token under a staff
        member's ID would read that member's notifications and publish as them."""
        reason = self._known.why_not_a_patient(user_id)
        if reason is not None:
            raise NotAllowed(field, reason)

    async def _turn_credentials(self, request: web.Request) -> web.Response:
        body = await parse_body(request, TurnCredentialsRequest)
        device_identity(request).check_acts_for(body.userId, self._known)
        username, credential = turn_rest_credentials(self._turn_secret, body.userId, self._turn_ttl)
        return web.json_response(
            {
                "urls": self._turn_urls,
                "username": username,
                "credential": credential,
                "ttlSeconds": self._turn_ttl,
            }
        )

    async def _revoke_access(self, request: web.Request) -> web.Response:
        body = await parse_body(request, RevokeAccessRequest)
        consultation = self._consultation_of_caller(request, body.consultationChannel, "revoke access")
        async with self._grants_lock:
            # The invitation or assignment ends first: no new token can be issued while the old
            # ones go. Nothing here depends on the consultation still running: the provider
            # revokes everyone as it ends the consultation, or after.
            ended = await self._invitations.remove(consultation.main, body.userId)
            ended = await self._assignments.remove(consultation.main, body.userId) or ended
            tokens = self.ledger.live_tokens(body.userId, consultation.main)
            for entry in tokens:
                await self._upstream(self._admin.revoke(entry.token))
                await self.ledger.forget([entry])
        logger.info("clinic_access_revoked tokens=%d access_ended=%s", len(tokens), ended)
        return web.json_response({"revoked": len(tokens)})

    async def _invite(self, request: web.Request) -> web.Response:
        body = await parse_body(request, InviteRequest)
        consultation = self._consultation_of_caller(request, body.consultationChannel, "invite")
        if body.invitedProviderId == consultation.provider_id:
            raise FieldError("invitedProviderId", "is the consultation's own provider")
        if not self._directory.is_provider(body.invitedProviderId):
            raise FieldError("invitedProviderId", "is not a provider in the clinic's directory")
        invitation = Invitation(
            consultation.main, body.invitedProviderId, body.role, consultation.provider_id
        )
        await self._invitations.save(invitation)
        logger.info("clinic_provider_invited role=%s", invitation.role)
        return web.json_response(
            {
                "consultationChannel": invitation.consultation_channel,
                "invitedProviderId": invitation.provider_id,
                "role": invitation.role,
                "invitedBy": invitation.invited_by,
            },
            status=201,
        )

    async def _assign(self, request: web.Request) -> web.Response:
        body = await parse_body(request, AssignRequest)
        consultation = self._consultation_of_caller(request, body.consultationChannel, "assign a nurse")
        nurse = self._directory.member(body.nurseId)
        if nurse is None or nurse.role != "nurse":
            raise FieldError("nurseId", "is not a nurse in the clinic's directory")
        provider = self._directory.member(consultation.provider_id)
        if provider is None or nurse.department_id != provider.department_id:
            raise NotAllowed("nurseId", "is not a nurse of this consultation's provider's department")
        assignment = Assignment(consultation.main, body.nurseId, consultation.provider_id)
        await self._assignments.save(assignment)
        logger.info("clinic_nurse_assigned")
        return web.json_response(
            {
                "consultationChannel": assignment.consultation_channel,
                "nurseId": assignment.nurse_id,
                "assignedBy": assignment.assigned_by,
            },
            status=201,
        )

    @staticmethod
    def _consultation_of_caller(request: web.Request, channel: str, doing: str) -> ConsultationChannels:
        """The consultation ``channel`` names, if the caller's credential is its provider's (else 403)."""
        try:
            consultation = parse_consultation(channel)
        except GrantRequestError as exc:
            raise FieldError(exc.field, exc.reason) from None
        caller = device_identity(request)
        claimed = request.headers.get(CALLER_HEADER)
        if claimed is not None and (caller.user_id is None or claimed != caller.user_id):
            raise FieldError(CALLER_HEADER, "does not name the device credential's user", status=403)
        caller.check_provider_of(consultation.provider_id, doing)
        return consultation

    async def _consent(self, request: web.Request) -> web.Response:
        device_identity(request).check_records_consent()
        body = await parse_body(request, ConsentRequest)
        self._check_is_patient(body.patientId, "patientId")
        # Two copies, written here only (a patient token has ``get`` on its App Context user, not
        # ``update``): App Context, which the agent reads, then the clinic's own record, which the
        # token server reads. If the second write fails, App Context holds the newer answer: a
        # withdrawal there already stops the agent's own check, and a grant there alone gets no token.
        record = await self._upstream(self._admin.set_consent(body.patientId, body.granted, body.expiresAt))
        await self._consents.save(body.patientId, body.granted, body.expiresAt)
        return web.json_response({"patientId": body.patientId, "consent": record})

    async def _on_call_roster(self, request: web.Request) -> web.Response:
        department = request.match_info["departmentId"]
        try:
            validate_id(department, "departmentId")
        except InvalidIdError as exc:
            raise FieldError(exc.field, exc.reason) from None
        providers = self._on_call.get(department, [])
        return web.json_response({"providers": [{"id": provider} for provider in providers]})

    @staticmethod
    async def _upstream(operation: Awaitable[T]) -> T:
        try:
            return await operation
        except UpstreamError as exc:
            raise FieldError("upstream", str(exc), status=502) from None
