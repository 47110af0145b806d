"""HTTP client of the clinic backend (PROTOCOL.md, "Clinic backend"). The kiosk is the client.

Authenticates with the kiosk's own device credential. Answers are validated before use;
the credential and the tokens it returns are never logged. It connects the way its ``Outbound``
says (the HTTPS proxy, the CA bundle: telehealth_client/outbound.py), and names the proxy or an
untrusted certificate when that is what failed. A proxy refusing ``proxy_authorization`` (407) is
a ClinicError whose ``retry_after`` is ``PROXY_REFUSED_RETRY_SECONDS``: a retry sooner would only
send the refused password again (a directory-backed proxy may lock the account).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Literal

import aiohttp
import yarl
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from telehealth_client.outbound import (
    PROXY_REFUSED_RETRY_SECONDS,
    Outbound,
    certificate_problem,
    proxy_refusal,
)
from telehealth_client.protocol.channels import InvalidIdError, validate_id

TOKEN_CONTEXT_FIELDS = frozenset({"appointmentId", "consultationChannel", "providerId", "departmentId"})


# The longest Retry-After honoured: a longer wait is the caller's back-off to decide, not the server's.
MAX_RETRY_AFTER_SECONDS = 300


class ClinicError(Exception):
    """The clinic backend refused or could not answer; ``status`` is the HTTP status if any.

    ``retry_after``: the seconds to wait before asking again: what the backend asked (``Retry-After``
    on a 429 or 503, at most ``MAX_RETRY_AFTER_SECONDS``), or ``PROXY_REFUSED_RETRY_SECONDS`` after
    the proxy refused ``proxy_authorization``; None if nothing says.
    """

    def __init__(
        self, operation: str, reason: str, status: int | None = None, *, retry_after: float | None = None
    ) -> None:
        super().__init__(f"{operation}: {reason}" + (f" (HTTP {status})" if status else ""))
        self.operation = operation
        self.reason = reason
        self.status = status
        self.retry_after = retry_after

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


class Assignment(BaseModel):
    """The clinic's record of a nurse's assignment: ``nurse_id`` may now ask for a token naming it."""

    model_config = ConfigDict(extra="ignore")

    consultation_channel: str = Field(alias="consultationChannel", min_length=1)
    nurse_id: str = Field(alias="nurseId", min_length=1)
    assigned_by: str = Field(alias="assignedBy", min_length=1)


class SinkAcknowledgement(BaseModel):
    """The audit sink's answer: the highest sequence it holds for ``device_id`` with no gap below."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    device_id: str = Field(alias="deviceId", min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
    highest_sequence: int = Field(alias="highestSequence", ge=0, strict=True)


class TurnCredentials(BaseModel):
    model_config = ConfigDict(extra="ignore")

    urls: list[str] = Field(min_length=1)
    username: str
    credential: str
    ttl_seconds: int = Field(alias="ttlSeconds", gt=0)


def _retry_after(response: aiohttp.ClientResponse) -> float | None:
    """``Retry-After`` in seconds (the delta form; an HTTP date is not used by the clinic), capped."""
    if response.status not in (429, 503):
        return None
    value = response.headers.get("Retry-After", "").strip()
    if not value.isascii() or not value.isdigit():
        return None
    return float(min(int(value), MAX_RETRY_AFTER_SECONDS))


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
    """``retry_after_wait_seconds``: a 429 whose ``Retry-After`` is at most this long is waited out
    (with ``sleep``) and the request made once more; a longer one is the caller's ClinicError
    (``retry_after`` set), to retry on its own schedule."""

    def __init__(
        self,
        base_url: str,
        device_credential: str,
        *,
        timeout_seconds: float = 10.0,
        retry_after_wait_seconds: float = 5.0,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        outbound: Outbound | None = None,
    ) -> None:
        self._base_url = base_url.rstrip("/")
        self._outbound = outbound or Outbound()
        url = yarl.URL(self._base_url)
        self._proxy = self._outbound.proxy_for(url.host or "", tls=url.scheme == "https")
        self._headers = {"Authorization": f"Bearer {device_credential}"}
        self._timeout = aiohttp.ClientTimeout(total=timeout_seconds)
        self._retry_after_wait = retry_after_wait_seconds
        self._sleep = sleep
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            proxy = self._proxy
            # The credential goes with each request, not as a session default: aiohttp 3.14 copies
            # a session's default headers into the CONNECT it sends a proxy, and moves an
            # Authorization header there into Proxy-Authorization: the proxy would get it.
            self._session = aiohttp.ClientSession(
                timeout=self._timeout,
                connector=aiohttp.TCPConnector(ssl=self._outbound.verify),
                proxy=proxy.url if proxy is not None else None,
            )
        return self._session

    def _unreachable(self, exc: aiohttp.ClientError) -> str:
        """Why the backend could not be reached, naming the proxy or the certificate when it is them."""
        proxy = self._proxy
        if isinstance(exc, aiohttp.ClientProxyConnectionError) and proxy is not None:
            return f"the proxy {proxy.address} is unreachable ({type(exc.os_error).__name__})"
        if isinstance(exc, aiohttp.ClientHttpProxyError) and proxy is not None:
            if exc.status == 407:
                return f"the proxy {proxy.address} refused proxy_authorization (HTTP 407)"
            return f"the proxy {proxy.address}: {proxy_refusal(exc.status)}"
        untrusted = certificate_problem(exc)
        if untrusted is not None:
            return f"the clinic backend's TLS certificate is not trusted ({untrusted}); see ca_bundle"
        if isinstance(exc, aiohttp.ClientConnectorDNSError) and exc.host:
            return f"clinic backend unreachable: DNS lookup failed for {exc.host}"
        return f"clinic backend unreachable: {type(exc).__name__}"

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
            return await self._request_once(method, operation, path, body, expect=expect)
        except ClinicError as exc:
            # Asked to come back shortly (a rate limit): once, after the wait the server named.
            if exc.retry_after is None or exc.status != 429 or exc.retry_after > self._retry_after_wait:
                raise
            await self._sleep(exc.retry_after)
        return await self._request_once(method, operation, path, body, expect=expect)

    async def _request_once(
        self, method: str, operation: str, path: str, body: Mapping[str, Any] | None, *, expect: int | None
    ) -> Any:
        try:
            async with self._client().request(
                method,
                self._base_url + path,
                json=body,
                headers=self._headers,
                proxy_headers=self._proxy.headers if self._proxy is not None else None,
            ) as response:
                if response.status >= 400:
                    raise ClinicError(
                        operation,
                        await _refusal(response),
                        response.status,
                        retry_after=_retry_after(response),
                    )
                if expect is not None and response.status != expect:
                    raise ClinicError(operation, f"unexpected answer, not {expect}", response.status)
                if response.status == 204:
                    return None
                return await response.json()
        except aiohttp.ClientError as exc:
            refused = isinstance(exc, aiohttp.ClientHttpProxyError) and exc.status == 407
            wait = PROXY_REFUSED_RETRY_SECONDS if refused else None
            raise ClinicError(operation, self._unreachable(exc), retry_after=wait) from None
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

    async def assign_nurse(self, consultation_channel: str, nurse_id: str) -> Assignment:
        """Assign a nurse (of the consultation's provider's department) to this provider's
        consultation: the nurse may then ask for a token naming it. Only the consultation's
        provider's device credential may; revoke_access for the nurse ends the assignment.
        """
        data = await self._post(
            "assign",
            "/api/telemedicine/assign",
            {"consultationChannel": consultation_channel, "nurseId": nurse_id},
        )
        try:
            return Assignment.model_validate(data)
        except ValidationError as exc:
            raise ClinicError("assign", f"malformed answer: {exc.error_count()} problem(s)") from None

    async def post_audit_event(self, event: Mapping[str, Any]) -> SinkAcknowledgement | None:
        """Hand one audit event (the wire form) to the audit sink; returns once it is stored (201).

        The answer is the sink's acknowledgement for the event's device (its highest sequence with
        no gap below), or None from a sink that answered without one (then it must name the
        event's ``id``). The sink keeps one copy per ``id``, so posting an event again is safe. Its
        ``actor`` must be this device credential's own identity and its ``organizationId`` the
        clinic's; a 409 says another event already holds its ``sequence``.
        """
        data = await self._post("audit-event", "/api/audit-events", event, expect=201)
        if not isinstance(data, dict):
            raise ClinicError("audit-event", "malformed answer: must be a JSON object")
        answered_id = data.get("id")
        if answered_id is not None and (
            not isinstance(answered_id, str) or answered_id.lower() != str(event.get("id", "")).lower()
        ):
            raise ClinicError("audit-event", "malformed answer: id: is not the posted event's")
        if "deviceId" not in data and "highestSequence" not in data:
            if answered_id is None:
                raise ClinicError("audit-event", "malformed answer: id: is missing")
            return None
        acknowledgement: SinkAcknowledgement = self._acknowledgement("audit-event", data)
        device_id = event.get("deviceId")
        if device_id is not None and acknowledgement.device_id != device_id:
            raise ClinicError("audit-event", "malformed answer: deviceId: is not the posted event's")
        return acknowledgement

    async def audit_head(self, device_id: str) -> SinkAcknowledgement:
        """The highest sequence the sink holds for ``device_id`` with no gap below it (0 if none).
        Only the device's own credential, or an auditor's, may ask."""
        validate_id(device_id, "deviceId")
        data = await self._request("GET", "audit-head", f"/api/audit-events/head?deviceId={device_id}")
        acknowledgement = self._acknowledgement("audit-head", data)
        if acknowledgement.device_id != device_id:
            raise ClinicError("audit-head", "malformed answer: deviceId: is not the one asked for")
        return acknowledgement

    @staticmethod
    def _acknowledgement(operation: str, data: Any) -> SinkAcknowledgement:
        try:
            return SinkAcknowledgement.model_validate(data)
        except ValidationError as exc:
            first = exc.errors(include_url=False)[0]
            field = ".".join(str(part) for part in first["loc"]) or "body"
            raise ClinicError(operation, f"malformed answer: {field}: {first['msg']}") from None

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
