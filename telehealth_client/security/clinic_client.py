"""HTTP client of the clinic backend (PROTOCOL.md, "Clinic backend"). The kiosk is the client.

Authenticates with the kiosk's own device credential. Answers are validated before use;
the credential and the tokens it returns are never logged.
"""

from __future__ import annotations

from typing import Any

import aiohttp
from pydantic import BaseModel, ConfigDict, Field, ValidationError


class ClinicError(Exception):
    """The clinic backend refused or could not answer; ``status`` is the HTTP status if any."""

    def __init__(self, operation: str, reason: str, status: int | None = None) -> None:
        super().__init__(f"{operation}: {reason}" + (f" (HTTP {status})" if status else ""))
        self.operation = operation
        self.status = status


class TokenGrant(BaseModel):
    model_config = ConfigDict(extra="ignore")

    token: str = Field(min_length=1)
    ttl_minutes: int = Field(alias="ttlMinutes", gt=0)
    channel_config: dict[str, Any] = Field(default_factory=dict, alias="channelConfig")


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

    async def _post(self, operation: str, path: str, body: dict[str, Any]) -> Any:
        try:
            async with self._client().post(self._base_url + path, json=body) as response:
                if response.status >= 400:
                    raise ClinicError(operation, await _refusal(response), response.status)
                if response.status == 204:
                    return None
                return await response.json()
        except aiohttp.ClientError as exc:
            raise ClinicError(operation, f"clinic backend unreachable: {type(exc).__name__}") from None
        except TimeoutError:
            raise ClinicError(operation, "clinic backend timed out") from None

    async def request_token(self, user_id: str, role: str, **context: str) -> TokenGrant:
        data = await self._post(
            "token", "/api/telemedicine/token", {"userId": user_id, "role": role, **context}
        )
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

    async def revoke_access(self, user_id: str, consultation_channel: str) -> int:
        """Revoke every token granted to ``user_id`` for the consultation; how many were revoked.

        Only the consultation's provider's device credential may.
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

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
