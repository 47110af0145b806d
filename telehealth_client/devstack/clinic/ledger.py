"""Which tokens the clinic granted, to whom, for which consultation: what revoke-access needs."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from ..grants import Role


@dataclass(frozen=True)
class IssuedToken:
    token: str
    user_id: str
    role: Role
    consultation_channel: str
    expires_at: float


class TokenLedger:
    """In memory, like the rest of the devstack; expired tokens are dropped as new ones arrive."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._issued: list[IssuedToken] = []

    def record(
        self, token: str, user_id: str, role: Role, consultation_channel: str, ttl_minutes: int
    ) -> None:
        now = self._clock()
        self._issued = [entry for entry in self._issued if entry.expires_at > now]
        self._issued.append(IssuedToken(token, user_id, role, consultation_channel, now + ttl_minutes * 60))

    def live_tokens(self, user_id: str, consultation_channel: str) -> list[IssuedToken]:
        """Unexpired tokens granted to ``user_id`` for ``consultation_channel``."""
        now = self._clock()
        return [
            entry
            for entry in self._issued
            if entry.user_id == user_id
            and entry.consultation_channel == consultation_channel
            and entry.expires_at > now
        ]

    def forget(self, entries: Iterable[IssuedToken]) -> None:
        gone = {id(entry) for entry in entries}
        self._issued = [entry for entry in self._issued if id(entry) not in gone]
