"""The agent's one status line: systemd's ``STATUS=``, the log, the local API's ``status``.

It says what the agent waits for (the clinic backend or PubNub at start, with the attempt and the
wait before the next; a refused credential named), then its consultation's state, that
consultation's call status and the PubNub connection, e.g. ``consultation in-progress, call live,
pub/sub connected``. An idle kiosk is ``idle``; a cart with no consultation ``pub/sub connected``.

``ServiceStatus`` holds the parts that come from events (what is awaited, the bus's last failed
attempt, each consultation's call status); ``line(...)`` composes it with what the agent reads of
its endpoints; ``publish(line)`` tells systemd when it changed and logs what is awaited (each new
wait, and a continuing one at most every ``WAIT_LOG_SECONDS``).

Public API: ``ServiceStatus(origin)``; ``waiting(text | None)``; ``starting(text | None)``;
``bus_attempt(change)``;
``bus_changed(change)``; ``observe(event) -> bool`` (whether the line may have changed);
``line(consultations, pubsub, idle=...)``; ``publish(line)``; ``ready_sent()``; ``close()``;
``RELEVANT`` (the hub events it reads).
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Sequence
from typing import Final

from telehealth_client import events, systemd
from telehealth_client.pubsub.bus import ConnectionStatus, StatusChange

log = logging.getLogger(__name__)

# A wait that goes on is logged again this often (STATUS= says each attempt).
WAIT_LOG_SECONDS: Final = 60.0
# The hub events that change the line.
RELEVANT: Final = (
    events.StateChanged,
    events.CallStatusChanged,
    events.SessionClosed,
    events.EndpointIdle,
    events.BusStatusChanged,
)
_CALL_OVER: Final = frozenset({"idle", "ended", "failed"})


class ServiceStatus:
    def __init__(self, origin: str) -> None:
        self._origin = origin
        self._waiting: str | None = None
        self._starting: str | None = None
        self._bus_retry: StatusChange | None = None
        self._calls: dict[str, str] = {}
        self._sent: str | None = None
        self._logged_wait: str | None = None
        self._logged_at = 0.0
        self._closed = False

    # -- what comes in ------------------------------------------------------------------------

    def waiting(self, text: str | None) -> None:
        """What a start step waits for now (a clinic answer, a connection), or None: nothing."""
        self._waiting = text

    def starting(self, text: str | None) -> None:
        """What is being started, said while nothing more precise is awaited; None once it is up."""
        self._starting = text

    def bus_attempt(self, change: StatusChange) -> None:
        """The agent's bus failed an attempt (it retries by itself)."""
        self._bus_retry = change

    def bus_changed(self, change: StatusChange) -> None:
        if change.status in (ConnectionStatus.CONNECTED, ConnectionStatus.IDLE, ConnectionStatus.STOPPED):
            self._bus_retry = None

    def observe(self, event: object) -> bool:
        """Take a hub event in; whether the line may have changed."""
        if isinstance(event, events.CallStatusChanged):
            self._calls[event.consultation_id] = event.status
        elif isinstance(event, events.SessionClosed):
            self._calls.pop(event.consultation_id, None)
        return isinstance(event, RELEVANT)

    # -- what goes out ------------------------------------------------------------------------

    def awaited(self) -> list[str]:
        """What the agent waits for now, each in words for the person on call."""
        found = [self._waiting] if self._waiting else []
        retry = self._bus_retry
        if retry is not None:
            attempt = f"attempt {retry.failures}" + (
                f", next in {retry.retry_in:.1f} s" if retry.retry_in is not None else ""
            )
            if retry.status is ConnectionStatus.ACCESS_DENIED:
                found.append(f"PubNub refused this agent's token ({attempt})")
            else:
                found.append(f"waiting for PubNub origin {self._origin} ({retry.reason}; {attempt})")
        return found

    def _said(self) -> list[str]:
        """``awaited()``, or what is being started while nothing is awaited."""
        return self.awaited() or ([self._starting] if self._starting else [])

    def line(self, consultations: Sequence[tuple[str, str]], pubsub: str, *, idle: bool) -> str:
        """``consultations``: (consultation ID, state) of each held; ``pubsub``: the connection's
        status; ``idle``: a kiosk between patients (it holds no connection by design)."""
        parts = self._said()
        if idle:
            return ", ".join([*parts, "idle"])
        if len(consultations) == 1:
            parts.append(f"consultation {consultations[0][1]}")
        elif consultations:
            counts = Counter(state for _, state in consultations)
            each = ", ".join(f"{count} {state}" for state, count in sorted(counts.items()))
            parts.append(f"consultations {len(consultations)} ({each})")
        if consultations:
            parts.append(f"call {self._call([cid for cid, _ in consultations])}")
        parts.append(f"pub/sub {pubsub}")
        return ", ".join(parts)

    def _call(self, held: list[str]) -> str:
        """The call that matters: one under way, else the last one's outcome, else none."""
        known = [self._calls[cid] for cid in held if cid in self._calls]
        live = [status for status in known if status not in _CALL_OVER]
        if live:
            return live[0]
        return known[0] if known else "none"

    def ready_sent(self) -> None:
        """systemd's READY went out carrying the line as the start returned it; the background start
        may have said more meanwhile (before READY, which then hid it): the next ``publish`` sends
        its line whatever was sent before."""
        self._sent = None

    def close(self) -> None:
        """The agent stops: its stop says STOPPING and what it does, not this line any more."""
        self._closed = True

    def publish(self, line: str) -> None:
        """Tell systemd the line if it changed; log what is awaited. Nothing once closed."""
        if self._closed:
            return
        self._log_waits()
        if line != self._sent:
            self._sent = line
            systemd.status(line)

    def _log_waits(self) -> None:
        awaited = "; ".join(self.awaited()) or None
        if awaited is None:
            if self._logged_wait is not None:
                log.info("agent no longer waiting")
            self._logged_wait = None
            return
        # The same wait (its words before the attempt count) is logged again only now and then.
        kind = awaited.split(" (", 1)[0]
        now = time.monotonic()
        previous = None if self._logged_wait is None else self._logged_wait.split(" (", 1)[0]
        if kind == previous and now - self._logged_at < WAIT_LOG_SECONDS:
            return
        self._logged_wait, self._logged_at = awaited, now
        # The words as STATUS= says them (IDs, hosts and codes only, never a clinic's reason).
        log.log(logging.ERROR if "refused" in awaited else logging.WARNING, "%s", awaited)
