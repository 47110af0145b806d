"""A proxy that refuses ``proxy_authorization`` (HTTP 407) is not hammered: every retry would send
the refused password again, and a directory-backed proxy may lock the hospital account. The bus,
the start's clinic retries and the TURN tunnel each name the refusal plainly; the bus and the clinic
retries ask again only after a minute. Real parts: a CONNECT proxy that wants other credentials,
the relay and the clinic stand-in behind TLS fronts."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from telehealth_client.consultation.start_policy import Patience
from telehealth_client.durable.at_rest import Sealer
from telehealth_client.durable.outbox import Outbox
from telehealth_client.outbound import Outbound, Proxy
from telehealth_client.pubsub.bus import ConnectionStatus, StatusChange
from telehealth_client.security.clinic_client import ClinicClient
from telehealth_client.service_status import ServiceStatus
from telehealth_client.tunnel import TunnelError, open_tunnel
from telehealth_devstack.stack import DevStack
from tests.support.connect_proxy import ConnectProxy
from tests.support.consultation import NURSE, WAIT
from tests.support.outbox import chat
from tests.support.proxied_bus import proxied_bus
from tests.support.recorder import Recorder
from tests.support.tls_front import ThrowawayCa, TlsFront

pytestmark = pytest.mark.integration

ACCEPTED = "nurse-cart-7:the-right-one"
WRONG_PASSWORD = "WRONG-pw-4f9Q"
REFUSED = f"nurse-cart-7:{WRONG_PASSWORD}"
SAID = "the proxy refused proxy_authorization (HTTP 407)"


def _refused_outbound(proxy: ConnectProxy, ca: ThrowawayCa) -> Outbound:
    """Out through ``proxy`` with the credentials it refuses, trusting the test's CA."""
    return Outbound(Proxy("127.0.0.1", proxy.port, REFUSED), ca_bundle=ca.ca_file)


async def _first_wait(
    proxy: ConnectProxy, what: str, call: Callable[[], Awaitable[object]], *, origin: str, clinic_url: str
) -> str:
    """What the start's ``Patience`` says it waits for at its first failed attempt at ``call``, once
    ``proxy`` refused one CONNECT: the step is still waiting then (cancelled here)."""
    said = Recorder()
    patience = Patience(said, origin=origin, clinic_url=clinic_url)
    step = asyncio.create_task(patience.attempt(what, call))
    try:
        (waiting,) = await said.wait_for(lambda text: text is not None)
        assert len(proxy.refused.items) == 1
        assert not step.done()
        return waiting
    finally:
        step.cancel()
        await asyncio.gather(step, return_exceptions=True)


async def test_the_bus_asks_a_refusing_proxy_again_only_after_a_minute_and_the_status_says_why(
    stack: DevStack, relay_front: TlsFront, ca: ThrowawayCa
) -> None:
    async with ConnectProxy(authorization=ACCEPTED) as proxy:
        bus = proxied_bus(stack, relay_front.origin, _refused_outbound(proxy, ca))
        attempts = Recorder()
        bus.add_retry_listener(attempts)
        service = ServiceStatus(relay_front.origin)
        bus.add_retry_listener(service.bus_attempt)
        try:
            await bus.subscribe([f"notification.{NURSE}"])
            (first,) = await attempts.wait_for(lambda _: True)
            assert (first.status, first.reason) == (ConnectionStatus.RECONNECTING, SAID)
            assert (first.failures, first.retry_in) == (1, 60.0)
            # What STATUS= and the log say.
            assert service.awaited() == [
                f"waiting for PubNub origin {relay_front.origin} ({SAID}; attempt 1, next in 60.0 s)"
            ]
            # The back-off alone (0.05 to 0.5 s) would have asked at least four times more by now.
            with pytest.raises(TimeoutError):
                await proxy.refused.wait_for(lambda _: True, count=2, within=2.0)
            assert (len(proxy.refused.items), len(attempts.items)) == (1, 1)
            assert proxy.tunnels.items == []
        finally:
            await bus.aclose()
        assert not any(WRONG_PASSWORD in str(change) for change in attempts.items)


async def test_the_bus_keeps_asking_a_refusing_proxy_at_its_slow_pace(
    stack: DevStack, relay_front: TlsFront, ca: ThrowawayCa
) -> None:
    """The pace shortened to a second so that seven attempts fit in a test: each one CONNECT, each
    scheduled a pace apart, never the back-off's fraction of a second; and no heartbeat meanwhile
    (due every 5 s with this presence timeout), which would send the refused password too."""
    loop = asyncio.get_running_loop()
    async with ConnectProxy(authorization=ACCEPTED) as proxy:
        outbound = _refused_outbound(proxy, ca)
        bus = proxied_bus(
            stack, relay_front.origin, outbound, proxy_refused_retry_seconds=1.0, presence_timeout_seconds=12
        )
        attempts = Recorder()
        bus.add_retry_listener(lambda change: attempts.add((loop.time(), change)))
        try:
            await bus.subscribe([f"notification.{NURSE}"])
            timed = await attempts.wait_for(lambda _: True, count=7, within=3 * WAIT)
            refused_then = len(proxy.refused.items)
        finally:
            await bus.aclose()
    changes: list[StatusChange] = [change for _, change in timed[:7]]
    assert [(change.failures, change.retry_in, change.reason) for change in changes] == [
        (failures, 1.0, SAID) for failures in range(1, 8)
    ]
    times = [at for at, _ in timed[:7]]
    assert all(later - earlier >= 0.99 for earlier, later in itertools.pairwise(times))
    assert times[-1] - times[0] >= 5.5  # past the first heartbeat's time
    assert refused_then == 7  # one CONNECT per attempt: no heartbeat went meanwhile


async def test_the_starts_clinic_retries_wait_a_minute_after_the_proxy_refused(
    stack: DevStack, clinic_front: TlsFront, ca: ThrowawayCa
) -> None:
    async with ConnectProxy(authorization=ACCEPTED) as proxy:
        outbound = _refused_outbound(proxy, ca)
        clinic = ClinicClient(clinic_front.url, stack.users[NURSE].credential, outbound=outbound)
        try:
            waiting = await _first_wait(
                proxy,
                "the TURN credentials",
                lambda: clinic.turn_credentials(NURSE),
                origin="unused.example",
                clinic_url=clinic_front.url,
            )
        finally:
            await clinic.aclose()
        assert waiting == (
            f"waiting for the clinic backend {clinic_front.url} for the TURN credentials (the proxy"
            f" 127.0.0.1:{proxy.port} refused proxy_authorization (HTTP 407); attempt 1, next in 60.0 s)"
        )
        assert WRONG_PASSWORD not in waiting


async def test_the_starts_bus_requests_wait_a_minute_after_the_proxy_refused(
    stack: DevStack, relay_front: TlsFront, ca: ThrowawayCa
) -> None:
    async with ConnectProxy(authorization=ACCEPTED) as proxy:
        bus = proxied_bus(stack, relay_front.origin, _refused_outbound(proxy, ca))
        try:
            waiting = await _first_wait(
                proxy,
                "the waiting room's history",
                lambda: bus.history(f"notification.{NURSE}"),
                origin=relay_front.origin,
                clinic_url="https://unused.example",
            )
        finally:
            await bus.aclose()
        assert waiting == (
            f"waiting for PubNub origin {relay_front.origin} for the waiting room's history"
            f" ({SAID}; attempt 1, next in 60.0 s)"
        )


async def test_the_turn_tunnel_names_a_refused_credential_and_does_not_retry() -> None:
    async with ConnectProxy(authorization=ACCEPTED) as proxy:
        with pytest.raises(TunnelError) as error:
            await open_tunnel(Proxy("127.0.0.1", proxy.port, REFUSED), "turn.example", 5349)
        assert str(error.value) == f"the proxy 127.0.0.1:{proxy.port} refused proxy_authorization (HTTP 407)"
        assert error.value.credentials_refused
        assert proxy.refused.items == ["turn.example:5349"]  # asked once: a retry is its caller's
        with pytest.raises(TunnelError) as other:
            await open_tunnel(Proxy("127.0.0.1", proxy.port, ACCEPTED), "127.0.0.1", 9)  # the proxy says 502
        assert not other.value.credentials_refused
        assert (
            str(other.value)
            == f"the proxy 127.0.0.1:{proxy.port} refused the tunnel to 127.0.0.1:9 (HTTP 502)"
        )


async def test_the_outbox_does_not_ask_a_refusing_proxy_again_at_its_back_off(
    stack: DevStack, relay_front: TlsFront, ca: ThrowawayCa, tmp_path: Path
) -> None:
    """A chat message queued behind a proxy that refuses proxy_authorization: its lane waits the
    refusal's minute, not its own back-off (here 20 ms, which would retry dozens of times a second
    and send the refused password each time); the message stays queued."""
    async with ConnectProxy(authorization=ACCEPTED) as proxy:
        bus = proxied_bus(stack, relay_front.origin, _refused_outbound(proxy, ca))
        outbox = Outbox(
            tmp_path / "outbox.sqlite3",
            Sealer("outbox-proxy-test-key-0123456789", purpose="outbox"),
            backoff_min_seconds=0.02,
            backoff_max_seconds=0.02,
        )
        try:
            await outbox.open()
            outbox.attach(bus)
            item = chat("behind the proxy")
            await outbox.put(item)
            await proxy.refused.wait_for(lambda _: True, within=WAIT)
            window = 1.0  # fifty back-offs of 20 ms: the refusal's minute must hold them all
            await asyncio.sleep(window)
            assert len(proxy.refused.items) == 1, proxy.refused.items
            assert [pending.id for pending in outbox.pending()] == [item.id]
        finally:
            await outbox.aclose()
            await bus.aclose()
