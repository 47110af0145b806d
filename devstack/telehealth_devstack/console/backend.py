"""The development stand-in for a provider app's own backend: it holds each development provider's
cart credential and asks the clinic stand-in for that provider, so the page never sees a credential.

A real provider app gets its keys, cipher key, token and TURN credentials from its own backend after
its users sign in; here the stack knows the development identities, so signing in is choosing one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import aiohttp

from telehealth_client.protocol.channels import InvalidIdError, validate_id
from telehealth_devstack.clinic.http import FieldError

if TYPE_CHECKING:
    from telehealth_devstack.stack import DevUser  # the stack builds the console: no import at run time

# The clinic calls the page may make, each as (method, path template): nothing else is forwarded.
CLINIC_CALLS: Mapping[str, tuple[str, str]] = {
    "token": ("POST", "/api/telemedicine/token"),
    "turn-credentials": ("POST", "/api/telemedicine/turn-credentials"),
    "invite": ("POST", "/api/telemedicine/invite"),
    "revoke-access": ("POST", "/api/telemedicine/revoke-access"),
    "on-call": ("GET", "/api/on-call/{departmentId}"),
}


@dataclass(frozen=True)
class ConsoleSettings:
    """What the console hands a signed-in page, and where the clinic stand-in answers."""

    origin: str  # the relay, host:port (plain HTTP on loopback)
    publish_key: str
    subscribe_key: str
    cipher_key: str
    clinic_url: str
    providers: Mapping[str, DevUser]  # the stack's providers (each with its cart's credential)


class ClinicAnswer(Exception):
    """The clinic refused a call: its status and JSON answer go back to the page unchanged."""

    def __init__(self, status: int, body: Any) -> None:
        super().__init__(str(status))
        self.status = status
        self.body = body


class ProviderBackend:
    """Signs pages in as development providers and forwards their clinic calls with the
    provider's own credential (the clinic decides what that provider may do)."""

    def __init__(self, settings: ConsoleSettings, session: aiohttp.ClientSession) -> None:
        self._settings = settings
        self._session = session

    def directory(self) -> list[dict[str, str]]:
        """Every development provider: user and department IDs, no credential."""
        return [
            {"userId": p.user_id, "departmentId": p.department_id} for p in self._settings.providers.values()
        ]

    def provider(self, user_id: object) -> DevUser:
        if not isinstance(user_id, str) or user_id not in self._settings.providers:
            raise FieldError("userId", "is not a provider of the development stack", 422)
        return self._settings.providers[user_id]

    async def sign_in(self, user_id: object) -> dict[str, Any]:
        """What a provider app's backend gives it after sign-in: the keyset, the cipher key, a
        standing token for the provider and TURN credentials."""
        provider = self.provider(user_id)
        grant = await self.clinic(
            provider,
            "token",
            {"userId": provider.user_id, "role": "provider", "departmentId": provider.department_id},
        )
        turn = await self.clinic(provider, "turn-credentials", {"userId": provider.user_id})
        settings = self._settings
        return {
            "userId": provider.user_id,
            "departmentId": provider.department_id,
            "origin": settings.origin,
            "publishKey": settings.publish_key,
            "subscribeKey": settings.subscribe_key,
            "cipherKey": settings.cipher_key,
            "token": grant["token"],
            "ttlMinutes": grant["ttlMinutes"],
            "channelConfig": grant.get("channelConfig", {}),
            "iceServers": [
                {"urls": turn["urls"], "username": turn["username"], "credential": turn["credential"]}
            ],
            "providers": self.directory(),
        }

    async def clinic(self, provider: DevUser, call: str, body: Mapping[str, Any]) -> Any:
        """One clinic call as ``provider``; ClinicAnswer when the clinic refuses it, FieldError when
        the page asks for a call there is not (404) or a bad department (422)."""
        if call not in CLINIC_CALLS:
            raise FieldError("call", f"must be one of {', '.join(CLINIC_CALLS)}", 404)
        method, template = CLINIC_CALLS[call]
        if method == "GET":
            try:
                department = validate_id(body.get("departmentId"), "departmentId")
            except InvalidIdError as exc:
                raise FieldError("departmentId", exc.reason, 422) from None
            path, payload = template.format(departmentId=department), None
        else:
            path, payload = template, dict(body)
        async with self._session.request(
            method,
            self._settings.clinic_url + path,
            json=payload,
            headers={"Authorization": f"Bearer {provider.credential}"},
        ) as response:
            answer = await response.json(content_type=None)
            if response.status >= 300:
                raise ClinicAnswer(response.status, answer)
            return answer
