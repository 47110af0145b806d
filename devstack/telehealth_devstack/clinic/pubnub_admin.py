"""The clinic's server-side PubNub client: grants, revokes and consent records.

It holds the secret key, as a real token server does, and talks to the development
relay through the unmodified SDK. Errors never carry tokens or keys in their text.
"""

from __future__ import annotations

import json
import logging
import secrets
import time
from collections.abc import Callable
from typing import Any, TypeVar

import httpx
from pubnub.exceptions import PubNubException
from pubnub.models.consumer.v3.channel import Channel
from pubnub.models.consumer.v3.uuid import UUID
from pubnub.pnconfiguration import PNConfiguration
from pubnub.pubnub_asyncio import PubNubAsyncio

from telehealth_client.logs import quiet_url_loggers

from ..grants import Permissions, RoleGrant

logger = logging.getLogger(__name__)
quiet_url_loggers()  # the SDK and httpx log URLs holding tokens

CONSENT_FIELD = "consent_telehealth"
R = TypeVar("R", Channel, UUID)


class UpstreamError(RuntimeError):
    """PubNub (here: the relay) refused or failed a call; ``status`` is its HTTP status if any."""

    def __init__(self, operation: str, status: int | None) -> None:
        super().__init__(f"PubNub {operation} failed" + (f" with HTTP {status}" if status else ""))
        self.operation = operation
        self.status = status


def _status(exc: PubNubException) -> int | None:
    code = exc.get_status_code()
    if code:
        return int(code)
    status = getattr(exc, "status", None)
    value = getattr(status, "status_code", None)
    return int(value) if value else None


def _channel(resource: Channel, permissions: Permissions) -> Channel:
    if permissions.read:
        resource.read()
    if permissions.write:
        resource.write()
    return _app_context(resource, permissions)


def _app_context(resource: R, permissions: Permissions) -> R:
    if permissions.get:
        resource.get()
    if permissions.update:
        resource.update()
    return resource


def sdk_channels(grant: RoleGrant) -> list[Channel]:
    """The grant as the SDK's resource objects: exact names, then patterns."""
    exact = [_channel(Channel.id(name), perms) for name, perms in grant.channels.items()]
    patterns = [_channel(Channel.pattern(regex), perms) for regex, perms in grant.patterns.items()]
    return exact + patterns


def sdk_uuids(grant: RoleGrant) -> list[UUID]:
    """The grant's App Context users as the SDK's resource objects."""
    return [_app_context(UUID.id(user), perms) for user, perms in grant.uuids.items()]


class PubNubAdmin:
    def __init__(
        self,
        *,
        origin: str,
        publish_key: str,
        subscribe_key: str,
        secret_key: str,
        ssl: bool = False,
        user_id: str = "clinic-backend",
        request_timeout: int = 10,  # the SDK insists on whole seconds
        clock: Callable[[], float] = time.time,
    ) -> None:
        config = PNConfiguration()
        config.origin = origin
        config.ssl = ssl
        config.publish_key = publish_key
        config.subscribe_key = subscribe_key
        config.secret_key = secret_key
        config.user_id = user_id
        config.enable_subscribe = False  # a token server never subscribes
        config.non_subscribe_request_timeout = request_timeout
        config.connect_timeout = request_timeout
        config.disable_config_locking = False  # the SDK copies and freezes it; no deprecation warning
        self._config = config
        self._clock = clock
        self._pubnub: PubNubAsyncio | None = None
        self._started = False

    async def start(self) -> None:
        self._started = True

    async def stop(self) -> None:
        self._started = False
        pubnub, self._pubnub = self._pubnub, None
        if pubnub is not None:
            await pubnub.stop()

    @property
    def _client(self) -> PubNubAsyncio:
        if not self._started:
            raise RuntimeError("PubNubAdmin is not started")
        if self._pubnub is None:
            # Built on first use, inside the running loop the SDK binds to: building its HTTP
            # client costs about 0.1 s, which a clinic that never calls PubNub need not pay.
            self._pubnub = PubNubAsyncio(self._config)
            # Signed requests carry this time and PubNub refuses one over 60 s off its own: a test
            # that moves the relay's manual clock moves this one with it.
            self._pubnub.timestamp = lambda: int(self._clock())
        return self._pubnub

    async def _call(self, operation: str, endpoint: Any) -> Any:
        """Run an SDK endpoint; any failure becomes an UpstreamError without the request's text."""
        try:
            return await endpoint.result()
        except PubNubException as exc:
            raise UpstreamError(operation, _status(exc)) from None
        except (httpx.HTTPError, OSError, TimeoutError):
            # The SDK lets transport errors through unwrapped.
            raise UpstreamError(operation, None) from None

    async def grant(self, grant: RoleGrant) -> str:
        endpoint = self._client.grant_token(
            channels=sdk_channels(grant),
            users=sdk_uuids(grant),
            ttl=grant.ttl_minutes,
            authorized_user_id=grant.authorized_uuid,
            # Tokens are signed data: identical grants in the same second would be one token, so a
            # specialist re-invited right after removal would get a token revoked before it was
            # issued. A random grant ID makes every token its own.
            meta={"grantId": secrets.token_hex(8)},
        )
        result = await self._call("grant_token", endpoint)
        token: str = result.token
        return token

    async def revoke(self, token: str) -> None:
        await self._call("revoke_token", self._client.revoke_token(token))

    async def set_consent(self, patient_id: str, granted: bool, expires_at: str | None) -> dict[str, Any]:
        """Write ``custom.consent_telehealth`` and keep the patient's other custom fields."""
        custom = await self._custom(patient_id)
        record = {"granted": granted, "expiresAt": expires_at}
        custom[CONSENT_FIELD] = json.dumps(record, separators=(",", ":"))
        endpoint = self._client.set_uuid_metadata(uuid=patient_id, custom=custom, include_custom=True)
        await self._call("set_uuid_metadata", endpoint)
        return record

    async def _custom(self, uuid: str) -> dict[str, Any]:
        try:
            result = await self._call(
                "get_uuid_metadata", self._client.get_uuid_metadata(uuid=uuid, include_custom=True)
            )
        except UpstreamError as exc:
            if exc.status == 404:
                return {}
            raise
        custom = (result.data or {}).get("custom") or {}
        return dict(custom) if isinstance(custom, dict) else {}
