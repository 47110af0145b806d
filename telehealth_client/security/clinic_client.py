"""HTTP client of the clinic backend (PROTOCOL.md, "Clinic backend"). The kiosk is the client.

Authenticates with the kiosk's own device credential. Answers are validated before use;
the credential and the tokens it returns are never logged.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import aiohttp
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from telehealth_client.protocol.channels import InvalidIdError, validate_id

TOKEN_CONTEXT_FIELDS = frozenset({"appointmentId", "consultationChannel", "providerId", "departmentId"})


class ClinicError(Exception):
    """The clinic backend refused or could not answer; ``status`` is the HTTP status if any."""

    def __init__(self, operation: str, reason: str, status: int | None = None) -> None:
        super().__init__(f"{operation}: {reason}" + (f" (HTTP {status})" if status else ""))
        self.operation = operation
        self.reason = reason
        self.status = status

    @property
    def refused(self) -> bool:
        """The clinic's own verdict (HTTP 403): asking again will not change it. Anything else (no
        answer, a time-out, 5xx, a 401 during a credential swap) may pass."""
        return self.status == 403

    @property
    def consent_refused(self) -> bool:
        """Refused for the patient's telehealth consent (PROTOCOL.md: 403 ``consent: ...``)."""
        return self.refused and self.reason.startswith("refused: consent:")


MAX_TOKEN_TTL_MINUTES = 43_200


class TokenGrant(BaseModel):
    model_config = ConfigDict(extra="ignore")

    token: str = Field(min_length=1)
    # PubNub grants last at most 30 days; a bigger number is a broken backend, not a long token.
    ttl_minutes: int = Field(alias="ttlMinutes", gt=0, le=MAX_TOKEN_TTL_MINUTES)
    channel_config: dict[str, Any] = Field(default_factory=dict, alias="channelConfig")


class Invitation(BaseModel):
    """The clinic's record of an invitation: ``invited_provider_id`` may now ask for a token naming it."""

    model_config = ConfigDict(extra="ignore")

    consultation_channel: str = Field(alias="consultationChannel", min_length=1)
    invited_provider_id: str = Field(alias="invitedProviderId", min_length=1)
    role: Literal["specialist", "second-opinion", "observer"]
    invited_by: str = Field(alias="invitedBy", min_length=1)


class Consent(BaseModel):
    model_config = ConfigDict(extra="ignore")

    granted: bool = Field(strict=True)
    expires_at: str | None = Field(alias="expiresAt")


class Revocation(BaseModel):
    model_config = ConfigDict(extra="ignore")

    revoked: int = Field(ge=0, strict=True)


class TurnCredentials(BaseModel):
    model_config = ConfigDict(extra="ignore")

    urls: list[str] = Field(min_length=1)
    username: str
    credential: str
    ttl_seconds: int = Field(alias="ttlSeconds", gt=0)


async def _refusal(response: aiohttp.ClientResponse) -> str:
    """The backend's reason (field and why), when it gives one as JSON; else just 'refused'."""
    try:
        body = await response.json(content_type=None)
    except (ValueError, aiohttp.ClientError):
        return "refused"
    if isinstance(body, dict) and isinstance(body.get("field"), str) and isinstance(body.get("reason"), str):
        return f"refused: {body['field'][:64]}: {body['reason'][:200]}"
    return "refused"


class ClinicClient:
    def __init__(self, base_url: str, device_credential: str, *, timeout_seconds: float = 10.0) -> None:
        self._base_url = base_url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {device_credential}"}
        self._timeout = aiohttp.ClientTimeout(total=timeout_seconds)
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(headers=self._headers, timeout=self._timeout)
        return self._session

    async def _post(
        self, operation: str, path: str, body: Mapping[str, Any], *, expect: int | None = None
    ) -> Any:
        return await self._request("POST", operation, path, body, expect=expect)

    async def _request(
        self,
        method: str,
        operation: str,
        path: str,
        body: Mapping[str, Any] | None = None,
        *,
        expect: int | None = None,
    ) -> Any:
        """The answer's JSON (None for 204); ``expect``: the one success status accepted."""
        try:
            async with self._client().request(method, self._base_url + path, json=body) as response:
                if response.status >= 400:
                    raise ClinicError(operation, await _refusal(response), response.status)
                if expect is not None and response.status != expect:
                    raise ClinicError(operation, f"unexpected answer, not {expect}", response.status)
                if response.status == 204:
                    return None
                return await response.json()
        except aiohttp.ClientError as exc:
            raise ClinicError(operation, f"clinic backend unreachable: {type(exc).__name__}") from None
        except TimeoutError:
            raise ClinicError(operation, "clinic backend timed out") from None

    async def request_token(self, user_id: str, role: str, **context: str | None) -> TokenGrant:
        """A token for ``user_id`` in ``role``; ``context`` is the request's other fields, camelCase.

        A provider's or nurse's standing token: ``departmentId`` only. A token naming a consultation
        (an invited provider's, a nurse's): ``departmentId`` and ``consultationChannel``. A patient's:
        ``providerId`` or ``consultationChannel`` (and ``appointmentId``). None values are left out.
        """
        unknown = sorted(set(context) - TOKEN_CONTEXT_FIELDS)
        if unknown:
            raise ValueError(
                f"{unknown[0]}: is not a token request field ({', '.join(sorted(TOKEN_CONTEXT_FIELDS))})"
            )
        body = {"userId": user_id, "role": role}
        body.update({name: value for name, value in context.items() if value is not None})
        data = await self._post("token", "/api/telemedicine/token", body)
        try:
            return TokenGrant.model_validate(data)
        except ValidationError as exc:
            raise ClinicError("token", f"malformed answer: {exc.error_count()} problem(s)") from None

    async def turn_credentials(self, user_id: str) -> TurnCredentials:
        data = await self._post("turn-credentials", "/api/telemedicine/turn-credentials", {"userId": user_id})
        try:
            return TurnCredentials.model_validate(data)
        except ValidationError as exc:
            raise ClinicError(
                "turn-credentials", f"malformed answer: {exc.error_count()} problem(s)"
            ) from None

    async def record_consent(self, patient_id: str, granted: bool, expires_at: str | None) -> Consent:
        """Record the patient's telehealth consent (``expires_at`` ISO-8601 UTC or None) as the clinic
        stored it. Only the patient kiosk's credential may; a patient token needs it granted.
        """
        data = await self._post(
            "consent",
            "/api/telemedicine/consent",
            {"patientId": patient_id, "granted": granted, "expiresAt": expires_at},
        )
        try:
            return Consent.model_validate(data.get("consent") if isinstance(data, dict) else None)
        except ValidationError as exc:
            raise ClinicError("consent", f"malformed answer: {exc.error_count()} problem(s)") from None

    async def invite(self, consultation_channel: str, invited_provider_id: str, role: str) -> Invitation:
        """Invite another provider to this provider's consultation (``specialist``, ``second-opinion``
        or ``observer``). Only the consultation's provider's device credential may; revoke_access
        for the invited provider ends the invitation.
        """
        data = await self._post(
            "invite",
            "/api/telemedicine/invite",
            {
                "consultationChannel": consultation_channel,
                "invitedProviderId": invited_provider_id,
                "role": role,
            },
        )
        try:
            return Invitation.model_validate(data)
        except ValidationError as exc:
            raise ClinicError("invite", f"malformed answer: {exc.error_count()} problem(s)") from None

    async def revoke_access(self, user_id: str, consultation_channel: str) -> int:
        """Revoke every token granted to ``user_id`` for the consultation; how many were revoked.

        Only the consultation's provider's device credential may. An invitation of ``user_id`` to
        the consultation ends too.
        """
        data = await self._post(
            "revoke-access",
            "/api/telemedicine/revoke-access",
            {"userId": user_id, "consultationChannel": consultation_channel},
        )
        try:
            return Revocation.model_validate(data).revoked
        except ValidationError as exc:
            raise ClinicError("revoke-access", f"malformed answer: {exc.error_count()} problem(s)") from None

    async def post_audit_event(self, event: Mapping[str, Any]) -> None:
        """Hand one audit event (the wire form) to the audit sink; returns once it is stored (201).

        The sink keeps one copy per ``id``, so posting an event again is safe. Its ``actor`` must
        be this device credential's own identity and its ``organizationId`` the clinic's.
        """
        data = await self._post("audit-event", "/api/audit-events", event, expect=201)
        if not isinstance(data, dict) or not isinstance(data.get("id"), str):
            raise ClinicError("audit-event", "malformed answer: id: is missing")
        if data["id"].lower() != str(event.get("id", "")).lower():
            raise ClinicError("audit-event", "malformed answer: id: is not the posted event's")

    async def on_call(self, department_id: str) -> list[str]:
        """The user IDs of the providers on call for ``department_id``, as the clinic lists them."""
        validate_id(department_id, "departmentId")
        data = await self._request("GET", "on-call", f"/api/on-call/{department_id}")
        providers = data.get("providers") if isinstance(data, dict) else None
        if not isinstance(providers, list):
            raise ClinicError("on-call", "malformed answer: providers: must be a list")
        ids: list[str] = []
        for index, provider in enumerate(providers):
            field = f"providers[{index}].id"
            try:
                ids.append(validate_id(provider.get("id") if isinstance(provider, dict) else None, field))
            except InvalidIdError as exc:
                raise ClinicError("on-call", f"malformed answer: {exc}") from None
        return ids

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
