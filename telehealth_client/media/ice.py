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

And the way to TURN on a hospital network (telehealth_client/outbound.py): aioice connects to a
TURN server over TCP or TLS with ``loop.create_connection(host, port, ssl=True)``, so with the
system's CAs only and never through a proxy. ``create_turn_endpoint`` here does what aioice's does,
the route's way: TLS verified with the CA bundle as well, and through the HTTPS proxy as a CONNECT
tunnel (``tunnel.py``) with TLS end to end inside it. aiortc's gathering reaches it through
aioice's module attribute, replaced once (``route_turn``, pinned like the rest); which route
applies is the caller's context (``turn_route(outbound)`` around ``setLocalDescription``), so a
connection made outside one goes exactly as aioice would send it. UDP cannot cross an HTTP proxy:
behind one, ``TurnConfig.ordered_urls`` puts TCP and TLS URLs first, and a clinic that hands out
only UDP ones gets direct UDP (which such a network usually drops: "TURN server unreachable").

Public API: ``tune_stun_retransmission() -> bool`` (True when applied); ``FIRST_RETRANSMISSION``,
``LONGEST_INTERVAL``, ``RETRANSMISSIONS``, ``give_up_after()``, ``PINNED_VERSIONS``;
``await relay_allocation_lost(ice_transport, within=...) -> bool``, ``selected_turn_client``;
``await create_turn_endpoint(factory, server, username, password, ssl=, transport=, outbound=)``,
``turn_route(outbound)``, ``route_turn() -> bool``.
Over TURN/TCP or TLS a restarted server drops the connection itself: aioice then has no selected
pair left to ask, and the stall watchdog (2 s) tells the stall.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl as ssl_module
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from typing import Any, Final

from telehealth_client.outbound import Outbound
from telehealth_client.tunnel import open_tunnel

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
_route_warned = False


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


# -- the way to TURN ---------------------------------------------------------------------------------

_ROUTE: ContextVar[Outbound | None] = ContextVar("telehealth_turn_route", default=None)
_ROUTED = "telehealth_routed"  # marks aioice's create_turn_endpoint once replaced


@contextlib.contextmanager
def turn_route(outbound: Outbound) -> Iterator[None]:
    """TURN connections aiortc makes inside (its gathering, in ``setLocalDescription``: the tasks
    it starts copy this context) go ``outbound``'s way."""
    route_turn()
    token = _ROUTE.set(outbound)
    try:
        yield
    finally:
        _ROUTE.reset(token)


def route_turn() -> bool:
    """Replace aioice's ``create_turn_endpoint`` with the routed one (once); False, said once,
    when aioice is not a version this was written against (its connections then go directly)."""
    import aioice
    import aioice.turn as turn

    if getattr(turn.create_turn_endpoint, _ROUTED, False):
        return True
    version = str(getattr(aioice, "__version__", ""))
    needed = ("TurnClientTcpProtocol", "TurnTransport", "DEFAULT_ALLOCATION_LIFETIME")
    if not version.startswith(PINNED_VERSIONS) or not all(hasattr(turn, name) for name in needed):
        global _route_warned
        if not _route_warned:
            _route_warned = True
            log.warning("turn route left to aioice aioice=%s (pinned to %s)", version, PINNED_VERSIONS)
        return False
    original = turn.create_turn_endpoint

    async def routed(*args: Any, **kwargs: Any) -> Any:
        outbound = _ROUTE.get()
        if outbound is None or outbound.direct:
            return await original(*args, **kwargs)
        return await create_turn_endpoint(*args, outbound=outbound, **kwargs)

    setattr(routed, _ROUTED, original)
    turn.create_turn_endpoint = routed
    return True


def _aioice_create_turn_endpoint() -> Callable[..., Any]:
    import aioice.turn as turn

    current = turn.create_turn_endpoint
    original: Callable[..., Any] = getattr(current, _ROUTED, None) or current
    return original


async def create_turn_endpoint(
    protocol_factory: Callable[[], Any],
    server_addr: tuple[str, int],
    username: str | None,
    password: str | None,
    lifetime: int | None = None,
    channel_refresh_time: int | None = None,
    ssl: bool | ssl_module.SSLContext | None = None,
    transport: str = "udp",
    *,
    outbound: Outbound,
) -> tuple[Any, Any]:
    """aioice's ``create_turn_endpoint`` (same arguments, same answer), connected ``outbound``'s
    way: over TLS with its CA bundle too, over TCP or TLS through its proxy. TunnelError (a
    ConnectionError) names the proxy when the tunnel cannot be had."""
    import aioice.turn as turn

    lifetime = turn.DEFAULT_ALLOCATION_LIFETIME if lifetime is None else lifetime
    refresh = turn.DEFAULT_CHANNEL_REFRESH_TIME if channel_refresh_time is None else channel_refresh_time
    if ssl is True and outbound.ssl_context is not None:
        ssl = outbound.ssl_context  # the system's CAs and the bundle's
    proxy = outbound.proxy_for(server_addr[0]) if transport == "tcp" else None
    if proxy is None:
        endpoint: tuple[Any, Any] = await _aioice_create_turn_endpoint()(
            protocol_factory,
            server_addr,
            username,
            password,
            lifetime=lifetime,
            channel_refresh_time=refresh,
            ssl=ssl,
            transport=transport,
        )
        return endpoint
    loop = asyncio.get_running_loop()
    sock = await open_tunnel(proxy, server_addr[0], server_addr[1])
    try:
        inner_transport, inner_protocol = await loop.create_connection(
            lambda: turn.TurnClientTcpProtocol(
                server_addr,
                username=username,
                password=password,
                lifetime=lifetime,
                channel_refresh_time=refresh,
            ),
            sock=sock,
            ssl=ssl or None,
            server_hostname=server_addr[0] if ssl else None,
        )
    except BaseException:
        sock.close()
        raise
    # From here as aioice's own: the allocation, and the transport closed if it fails.
    try:
        protocol = protocol_factory()
        turn_transport = turn.TurnTransport(inner_protocol)
        await turn_transport._connect(protocol)
    except BaseException:
        inner_transport.close()
        raise
    return turn_transport, protocol
