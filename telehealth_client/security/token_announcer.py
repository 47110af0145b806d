"""What the token keeper says, told to the user through the event hub (one place for every endpoint).

- ``TokenExpiring`` -> ``events.TokenExpiring`` (when the token runs out);
- ``TokenRefreshFailed`` (the first failure of a streak) -> ``events.AccessRenewing``: the clinic
  cannot be reached, access is being renewed; the consultation, media and queued chat go on;
- each ``TokenRefreshed`` -> ``events.TokenRefreshed`` (its life and why), and the one that ends
  such a streak also -> ``events.AccessRenewed``;
- ``TokenAccessDenied`` (a verdict) -> ``events.AccessDenied``.

Events carry no token: times, counts and the refused operation only.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from telehealth_client import events
from telehealth_client.security import tokens


class TokenAnnouncer:
    """Call it with each keeper event; it emits the user-facing ones on ``hub``."""

    def __init__(self, hub: events.EventHub) -> None:
        self._hub = hub
        self._renewing = False

    def __call__(self, event: tokens.TokenEvent) -> None:
        if isinstance(event, tokens.TokenExpiring):
            self._hub.emit(events.TokenExpiring(datetime.now(UTC) + timedelta(seconds=event.seconds_left)))
        elif isinstance(event, tokens.TokenRefreshFailed):
            self._renewing = True
            self._hub.emit(events.AccessRenewing(event.retry_in_seconds, event.expired))
        elif isinstance(event, tokens.TokenRefreshed):
            self._hub.emit(events.TokenRefreshed(event.ttl_minutes, event.reason))
            if self._renewing:
                self._renewing = False
                self._hub.emit(events.AccessRenewed())
        elif isinstance(event, tokens.TokenAccessDenied):
            self._renewing = False
            self._hub.emit(events.AccessDenied(event.source))
