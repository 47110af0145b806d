"""STUN retransmission pacing for the media child: the one place that reaches into aioice.

Measured here, two waits that aioice's RFC pacing (500 ms, doubling) puts into a call:
- Setup: in a relay-only call the callee's first connectivity check reaches the caller's TURN
  allocation before the caller has the answer and a permission for the callee, so coturn drops it;
  the call then waits for the first retransmission (offer to first frame 0.56-0.59 s, of which
  0.48 s is that wait). A 100 ms first retransmission brings the call up in about 0.1 s.
- Recovery: a call rebuilt while the path is cut (a 10 s UDP outage) keeps checking with doubling
  intervals, 3.2 s and 6.4 s apart by the time the path is back, so media returned 4.7-5.2 s after
  the outage ended. Checks at most 250 ms apart bring it back within about half a second, for
  four small datagrams a second while nothing gets through.
The number of retransmissions is chosen so that a transaction still gives up after about 25 s
(aioice: 0.5 s x 63 = 31.5 s), not after 6 s.

aioice has no API for this: its module constants and the transaction's retransmission step are
set, pinned to the aioice versions this was measured with; any other version leaves aioice as it
is and says so once.

And one question aioice does not ask: is the TURN allocation a connection relays through still
there? A restarted TURN server has forgotten every allocation, so media through it never comes
back, yet the client only learns it at its next refresh (minutes away). A Refresh request answers
at once: 437 (Allocation Mismatch) when it is gone (measured with coturn here: 2 ms after its
restart), success when it is there; a frozen or unreachable server does not answer.

Public API: ``tune_stun_retransmission() -> bool`` (True when applied); ``FIRST_RETRANSMISSION``,
``LONGEST_INTERVAL``, ``RETRANSMISSIONS``, ``give_up_after()``, ``PINNED_VERSIONS``;
``await relay_allocation_lost(ice_transport, within=...) -> bool``, ``selected_turn_client``.
Over TURN/TCP or TLS a restarted server drops the connection itself: aioice then has no selected
pair left to ask, and the stall watchdog (2 s) tells the stall.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, Final

log = logging.getLogger(__name__)

PINNED_VERSIONS: Final = ("0.13.",)  # version prefixes (pyproject allows aioice <0.14)
FIRST_RETRANSMISSION: Final = 0.1  # seconds; doubling after each ...
LONGEST_INTERVAL: Final = 0.25  # ... up to this
RETRANSMISSIONS: Final = 100
_STEP = "_Transaction__retry"  # aioice's private retransmission step (name-mangled)
_DELAY = "_Transaction__timeout_delay"  # the interval before the next retransmission
_INNER = "_TurnTransport__inner_protocol"  # aioice's TURN client behind a relayed transport
ALLOCATION_MISMATCH: Final = 437  # RFC 8656: no allocation for this client's 5-tuple
_allocation_check_warned = False


def give_up_after() -> float:
    """Seconds from a transaction's first send until it gives up (about 25 s)."""
    total, interval = 0.0, FIRST_RETRANSMISSION
    for _ in range(RETRANSMISSIONS + 1):
        total += interval
        interval = min(interval * 2, LONGEST_INTERVAL)
    return total


def tune_stun_retransmission() -> bool:
    import aioice
    import aioice.stun

    version = getattr(aioice, "__version__", "unknown")
    transaction = getattr(aioice.stun, "Transaction", None)
    step = getattr(transaction, _STEP, None)
    if (
        not version.startswith(PINNED_VERSIONS)
        or not hasattr(aioice.stun, "RETRY_RTO")
        or not hasattr(aioice.stun, "RETRY_MAX")
        or step is None
    ):
        log.warning("stun retransmission left as it is aioice=%s (pinned to %s)", version, PINNED_VERSIONS)
        return False
    aioice.stun.RETRY_RTO = FIRST_RETRANSMISSION
    aioice.stun.RETRY_MAX = RETRANSMISSIONS
    if not getattr(step, "paced", False):
        setattr(transaction, _STEP, _paced(step))
    return True


def _paced(step: Callable[[Any], None]) -> Callable[[Any], None]:
    """aioice's step (send, schedule the next, double the interval), the interval then capped."""

    def paced_step(transaction: Any) -> None:
        step(transaction)
        if getattr(transaction, _DELAY, 0.0) > LONGEST_INTERVAL:
            setattr(transaction, _DELAY, LONGEST_INTERVAL)

    paced_step.paced = True  # type: ignore[attr-defined]
    return paced_step


async def relay_allocation_lost(ice_transport: Any, *, within: float) -> bool:
    """Whether the TURN server no longer holds the allocation that ``ice_transport``'s (aiortc's
    ``RTCIceTransport``) selected pair relays through: it answered a Refresh with 437. False when
    the allocation is there, when no answer came within ``within`` seconds (a frozen or unreachable
    server: nothing is known yet), or when the pair cannot be found (not relayed, aioice not pinned)."""
    client = selected_turn_client(ice_transport)
    if client is None:
        return False
    import aioice.stun as stun

    request = stun.Message(message_method=stun.Method.REFRESH, message_class=stun.Class.REQUEST)
    request.attributes["LIFETIME"] = client.lifetime  # a refresh like aioice's own, if it is there
    try:
        async with asyncio.timeout(within):
            await client.request_with_retry(request)
    except stun.TransactionFailed as exc:
        return bool(exc.response.error_code == ALLOCATION_MISMATCH)
    except (TimeoutError, stun.TransactionTimeout, ConnectionError):
        return False
    return False


def selected_turn_client(ice_transport: Any) -> Any | None:
    """aioice's TURN client of the pair ``ice_transport`` selected, None when there is none (not
    relayed, not connected, or aioice not the version this was written against: said once)."""
    import aioice

    version = str(getattr(aioice, "__version__", ""))
    if not version.startswith(PINNED_VERSIONS):
        global _allocation_check_warned
        if not _allocation_check_warned:
            _allocation_check_warned = True
            log.warning("turn allocation check off aioice=%s (pinned to %s)", version, PINNED_VERSIONS)
        return None
    gatherer = getattr(ice_transport, "iceGatherer", None)
    connection = getattr(gatherer, "_connection", None)
    nominated = getattr(connection, "_nominated", None)
    if not isinstance(nominated, dict) or not nominated:
        return None
    pair = next(iter(nominated.values()))
    client = getattr(getattr(pair.protocol, "transport", None), _INNER, None)
    if client is None or not hasattr(client, "request_with_retry"):
        return None  # not relayed
    return client
