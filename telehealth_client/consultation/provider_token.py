"""The provider's Access Manager token: one keeper at a time, the standing one or an invitation's.

Accepting an invitation swaps the standing token for one naming that consultation (it carries the
standing grants too); when the invited consultation is over, the standing one returns. Each token
event goes to the audit trail under the scope the token names, and is announced on the hub.

Public API: ``ProviderToken(connect, bus, hub, user_id=..., department_id=..., policy=...,
auditor=..., on_access_denied=...)``; ``await standing()``, ``await invited(consultation_id)``,
``retire()``, ``await denied(error)`` (the bus's denial handler), ``stop()`` (no keeper starts
from now on; ``stopping``), ``await aclose()``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from telehealth_client import events
from telehealth_client.audit.auditor import Auditor, audit_token_event
from telehealth_client.connector import Connector
from telehealth_client.pubsub.bus import AccessDeniedError, Bus
from telehealth_client.security import tokens
from telehealth_client.security.token_announcer import TokenAnnouncer


class ProviderToken:
    def __init__(
        self,
        connect: Connector,
        bus: Bus,
        hub: events.EventHub,
        *,
        user_id: str,
        department_id: str,
        policy: tokens.RefreshPolicy | None,
        auditor: Auditor | None,
        on_access_denied: Callable[[], None],
    ) -> None:
        self._connect = connect
        self._bus = bus
        self._user_id = user_id
        self._department_id = department_id
        self._policy = policy
        self._auditor = auditor
        self._on_access_denied = on_access_denied
        self._announce = TokenAnnouncer(hub)
        self._keeper: tokens.TokenKeeper | None = None
        self._scope = "standing"  # what the current token names, for the audit trail
        self._lock = asyncio.Lock()  # the keeper is replaced or closed by one task at a time
        self._stopping = False

    async def standing(self) -> None:
        await self._use({"departmentId": self._department_id})

    async def invited(self, consultation_id: str) -> None:
        await self._use({"departmentId": self._department_id, "consultationChannel": consultation_id})

    async def _use(self, context: dict[str, str]) -> None:
        """Replace the keeper: one token at a time (an invited one carries the standing grants)."""
        async with self._lock:
            if self._keeper is not None:
                await self._keeper.aclose()
                self._keeper = None
            if self._stopping:
                return  # stopping: a keeper started now would outlive the endpoint
            request = tokens.TokenRequest(self._user_id, "provider", context)
            self._scope = context.get("consultationChannel", "standing")
            self._keeper = tokens.TokenKeeper(
                self._connect.clinic, self._bus, request, self._on_event, policy=self._policy
            )
            await self._keeper.start()

    def retire(self) -> None:
        """The invitation's token is about to be revoked: its 403s are expected from now on."""
        if self._keeper is not None:
            self._keeper.retire()

    async def denied(self, error: AccessDeniedError) -> bool:
        return False if self._keeper is None else await self._keeper.handle_access_denied(error)

    def stop(self) -> None:
        """The endpoint is stopping: no keeper starts from now on (nor does the standing one return)."""
        self._stopping = True

    @property
    def stopping(self) -> bool:
        return self._stopping

    def _on_event(self, event: tokens.TokenEvent) -> None:
        if self._auditor is not None:
            audit_token_event(self._auditor, event, self._scope)
        self._announce(event)
        if isinstance(event, tokens.TokenAccessDenied):
            self._on_access_denied()

    async def aclose(self) -> None:
        self.stop()
        async with self._lock:  # after a replacement under way (a removed specialist's)
            if self._keeper is not None:
                await self._keeper.aclose()
                self._keeper = None
