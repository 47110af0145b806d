"""The clinic backend stand-in: PROTOCOL.md's "Clinic backend" table on 127.0.0.1.

FOR DEVELOPMENT AND TESTS ONLY. Endpoints (all need ``Authorization: Bearer <device credential>``).

Each device credential is bound to a ``DeviceIdentity``: a provider's or a nurse's cart acts only
as its one user in its role; a patient check-in kiosk acts as any patient, and only as a patient.
The caller is whoever the credential says, never what the request claims. An unknown credential
gets 401; a credential that may not do what is asked gets 403 naming the field and the reason.

- ``POST /api/telemedicine/token`` ``{userId, role, appointmentId?, consultationChannel?, providerId?,
  departmentId?}`` -> ``{token, ttlMinutes, channelConfig}`` with the permissions of PROTOCOL.md's
  "Token permissions by role" (``devstack.grants``). ``role`` must be the credential's role and
  ``userId`` its user (any patient for a kiosk).

  - patient: ``providerId`` or ``consultationChannel``; refused 403 ``consent: missing | not
    granted | expired`` unless the clinic's consent record is granted and unexpired, and 403
    ``userId`` for a provider's or nurse's ID (a kiosk acts for patients only).
  - provider or nurse: ``departmentId``, which must be its own in the clinic's directory. Without
    ``consultationChannel``: the standing token. With one: a provider's own consultation gives
    the standing token naming it; another provider's needs a standing invitation (403
    ``consultationChannel`` otherwise) and adds that consultation; a nurse's must be one of a
    provider in its department and adds that consultation and the provider's waiting room.
- ``POST /api/telemedicine/turn-credentials`` ``{userId}`` -> ``{urls, username, credential, ttlSeconds}``;
  ``userId`` must be one the credential may act for.
- ``POST /api/telemedicine/revoke-access`` ``{userId, consultationChannel}`` -> 200 ``{revoked: N}``,
  the number of tokens revoked; ``userId``'s invitation to the consultation, if any, ends too.
  The credential must be the consultation's provider's (the provider ID in the channel name).
  An ``X-User-Id`` header, if sent, must name that same provider (it identifies no one by itself).
- ``POST /api/telemedicine/invite`` ``{consultationChannel, invitedProviderId, role}`` (``role``
  ``specialist``, ``second-opinion`` or ``observer``) -> 201 ``{consultationChannel,
  invitedProviderId, role, invitedBy}``. The credential must be the consultation's provider's
  (``X-User-Id``, if sent, must name it); ``invitedProviderId`` a provider in the directory, not
  the consultation's own. Inviting again replaces the role.
- ``POST /api/telemedicine/consent`` ``{patientId, granted, expiresAt}`` (``expiresAt`` ISO-8601 UTC
  or null) -> 200 ``{patientId, consent}``; writes App Context ``custom.consent_telehealth`` and the
  clinic's own record. Only the patient kiosk's credential may, and not for a staff member's ID.
- ``GET /api/on-call/{departmentId}`` -> ``{providers: [{id}]}`` (empty for an unknown department).
- ``POST /api/audit-events`` one audit event -> 201 ``{id, stored}`` (``stored`` false for a repeat id).
  Its ``actor`` must be the credential's own identity (role and user; any patient for a kiosk),
  and its ``organizationId`` the clinic's own (403 naming the field otherwise).
- ``GET /api/audit-events`` -> ``{events: [...]}`` in the order first received; auditors only.

Every answer carries CORS headers and an ``OPTIONS`` preflight is answered without a credential,
as the relay does, so a provider page on another origin can fetch its token and TURN credentials.

``organization_id``: the one organization this clinic serves; it names the audit channel
(``audit.{organizationId}``) in every token and in ``channelConfig.auditChannel``. Agents are
configured with the same ID (``TELEHEALTH_ORGANIZATION_ID``).

``token_ttl_minutes``: a TTL per role instead of the grant rules' (tests use PubNub's minimum,
1 minute, to watch tokens being refreshed); roles not named keep theirs.

``clock`` (seconds since the epoch): the time grant requests are signed with and issued tokens
expire by; tests give it the relay's manual clock.

``state_dir``: the issued-token ledger, invitations and consent (``clinic.sqlite3``) and the audit
sink (``audit.sqlite3``) live there, so a restart on the same directory revokes what was issued
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
from .audit_store import AuditStore
from .consent_store import CONSENT_SCHEMA, ConsentStore, consent_refusal
from .directory import Directory, StaffMember
from .http import (
    GUARD,
    FieldError,
    cors_middleware,
    device_auth_middleware,
    device_identity,
    parse_body,
    read_object,
    validate,
)
from .identity import DeviceIdentity, NotAllowed
from .invitations import INVITATION_SCHEMA, Invitation, InvitationStore
from .ledger import LEDGER_SCHEMA, TokenLedger
from .models import (
    AuditEvent,
    ConsentRequest,
    InviteRequest,
    RevokeAccessRequest,
    TokenRequest,
    TurnCredentialsRequest,
)
from .pubnub_admin import PubNubAdmin, UpstreamError
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
    """A provider's or nurse's credential without a directory entry could never get a token."""
    for identity in identities:
        if identity.role in ("provider", "nurse") and identity.user_id is not None:
            member = directory.member(identity.user_id)
            if member is None or member.role != identity.role:
                raise ValueError(
                    f"directory has no {identity.role} {identity.user_id!r} (its device credential needs one)"
                )


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
        self._audit = AuditStore(None if state_dir is None else state_dir / "audit.sqlite3")
        self._records = SqliteWorker(
            None if state_dir is None else state_dir / "clinic.sqlite3",
            LEDGER_SCHEMA + CONSENT_SCHEMA + INVITATION_SCHEMA,
            "clinic",
        )
        self.ledger = TokenLedger(self._records, clock)
        self._consents = ConsentStore(self._records)
        self._invitations = InvitationStore(self._records)
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
        return await self._audit.events()

    async def consent(self, patient_id: str) -> dict[str, Any] | None:
        """The clinic's own consent record of ``patient_id`` (None if never recorded)."""
        return await self._consents.get(patient_id)

    async def invitation_stands(self, consultation_channel: str, provider_id: str) -> bool:
        """True while ``provider_id``'s invitation to the consultation stands."""
        return await self._invitations.get(consultation_channel, provider_id) is not None

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
                web.post("/api/telemedicine/consent", self._consent),
                web.get("/api/on-call/{departmentId}", self._on_call_roster),
                web.post("/api/audit-events", self._add_audit_event),
                web.get("/api/audit-events", self._list_audit_events),
            ]
        )
        return app

    async def _token(self, request: web.Request) -> web.Response:
        body = await parse_body(request, TokenRequest)
        device_identity(request).check_token_request(body.userId, body.role)
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
        async with self._grants_lock:
            await self._check_may_have(grant, body.departmentId)
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

    async def _check_may_have(self, grant: RoleGrant, department_id: str | None) -> None:
        """NotAllowed unless the caller may have ``grant``: consent, department, invitation."""
        if grant.role == "patient":
            self._check_not_staff(grant.authorized_uuid, "userId")
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

    def _check_not_staff(self, user_id: str, field: str) -> None:
        """A kiosk acts for any patient, never as a provider or nurse: a patient token under a staff
        member's ID would read that member's notifications and publish as them."""
        if self._directory.member(user_id) is not None:
            raise NotAllowed(field, "is a staff member's user ID, not a patient's")

    async def _turn_credentials(self, request: web.Request) -> web.Response:
        body = await parse_body(request, TurnCredentialsRequest)
        device_identity(request).check_acts_for(body.userId)
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
            # The invitation ends first: no new token can be issued while the old ones go.
            ended = await self._invitations.remove(consultation.main, body.userId)
            tokens = self.ledger.live_tokens(body.userId, consultation.main)
            for entry in tokens:
                await self._upstream(self._admin.revoke(entry.token))
                await self.ledger.forget([entry])
        logger.info("clinic_access_revoked tokens=%d invitation_ended=%s", len(tokens), ended)
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
        self._check_not_staff(body.patientId, "patientId")
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

    async def _add_audit_event(self, request: web.Request) -> web.Response:
        raw = await read_object(request)
        event = validate(AuditEvent, raw)
        device_identity(request).check_audit_actor(event.actor.userId, event.actor.role)
        if event.organizationId != self._organization_id:
            # The sink is this organization's audit trail: another's events do not belong in it.
            raise NotAllowed(
                "organizationId", f"must be this clinic's organization ({self._organization_id})"
            )
        # Stored as received (unknown fields included) but with the id in canonical form,
        # so one event in two spellings is still stored once.
        raw["id"] = event.id
        stored = await self._audit.append(event.id, raw)
        return web.json_response({"id": event.id, "stored": stored}, status=201)

    async def _list_audit_events(self, request: web.Request) -> web.Response:
        device_identity(request).check_reads_audit()
        return web.json_response({"events": await self._audit.events()})

    @staticmethod
    async def _upstream(operation: Awaitable[T]) -> T:
        try:
            return await operation
        except UpstreamError as exc:
            raise FieldError("upstream", str(exc), status=502) from None
