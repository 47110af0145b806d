"""A hospital network that lets nothing out but an HTTP proxy: the agent's PubNub traffic and its
clinic calls go through a real CONNECT proxy (which counts its tunnels), TLS end to end inside
them; a closed proxy or one that wants credentials is named; ``no_proxy`` hosts and plain HTTP go
direct."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from telehealth_client.agent import Agent
from telehealth_client.config import load_settings
from telehealth_client.doctor.clinic import check_clinic
from telehealth_client.doctor.clock import check_clock
from telehealth_client.doctor.origin import check_origin
from telehealth_client.outbound import Outbound, Proxy
from telehealth_client.preflight import signaling_round_trip
from telehealth_client.pubsub.bus import ConnectionStatus, Envelope, StatusChange
from telehealth_client.pubsub.pubnub_bus import PubNubBus
from telehealth_client.security.clinic_client import ClinicClient, ClinicError
from telehealth_devstack.stack import DevStack
from tests.support.connect_proxy import ConnectProxy
from tests.support.consultation import DEPARTMENT, NURSE, PROVIDER, WAIT, Parts
from tests.support.logs import LogLines
from tests.support.notify import free_port
from tests.support.proxied_bus import proxied_bus
from tests.support.recorder import Recorder
from tests.support.tls_front import ThrowawayCa, TlsFront

pytestmark = pytest.mark.integration

PROXY_CREDENTIALS = "nurse-cart-7:pa:ss word"  # a colon and a space in the password, as they come


def _nurse_environment(
    stack: DevStack,
    tmp_path: Path,
    relay_front: TlsFront,
    clinic_front: TlsFront,
    proxy: ConnectProxy,
    ca: ThrowawayCa,
) -> dict[str, str]:
    """The nurse's settings with both the relay and the clinic behind TLS, reached through ``proxy``."""
    return {
        **stack.agent_environment(NURSE),
        "TELEHEALTH_STATE_DIR": str(tmp_path / "nurse"),
        "TELEHEALTH_ORIGIN": relay_front.origin,
        "TELEHEALTH_SSL": "true",
        "TELEHEALTH_CLINIC_URL": clinic_front.url,
        "TELEHEALTH_HTTPS_PROXY": proxy.url,
        "TELEHEALTH_CA_BUNDLE": str(ca.ca_file),
    }


async def _status_while_subscribing(bus: PubNubBus, wanted: ConnectionStatus) -> StatusChange:
    """The first status change to ``wanted`` once the bus subscribes (and starts its long-poll)."""
    changes = Recorder()
    bus.add_status_listener(changes)
    await bus.subscribe([f"notification.{NURSE}"])
    found = await changes.wait_for(lambda change: change.status == wanted, within=WAIT)
    change: StatusChange = found[0]
    return change


async def test_an_agent_reaches_pubnub_and_the_clinic_only_through_the_proxy(
    parts: Parts,
    tmp_path: Path,
    relay_front: TlsFront,
    clinic_front: TlsFront,
    proxy: ConnectProxy,
    ca: ThrowawayCa,
) -> None:
    environment = _nurse_environment(parts.stack, tmp_path, relay_front, clinic_front, proxy, ca)
    agent = Agent(load_settings(environ=environment))
    received: asyncio.Queue[Envelope] = asyncio.Queue()
    agent.notification_listeners.append(received.put)
    try:
        await agent.start()  # its standing token from the clinic, then its subscription
        await asyncio.wait_for(agent.connected.wait(), WAIT)
        # A provider (straight to the plain relay) reaches the nurse's cart through the proxy.
        clinic = parts.clinic(PROVIDER)
        grant = await clinic.request_token(PROVIDER, "provider", departmentId=DEPARTMENT)
        await parts.raw_bus(PROVIDER, grant.token).publish(
            f"notification.{NURSE}", {"type": "PATIENT_READY", "title": "t"}
        )
        envelope = await asyncio.wait_for(received.get(), WAIT)
        assert (envelope.publisher, envelope.channel) == (PROVIDER, f"notification.{NURSE}")
    finally:
        await agent.aclose()
    assert proxy.tunnels_to(clinic_front.origin) >= 1
    assert proxy.tunnels_to(relay_front.origin) >= 1
    # Nothing else was tunnelled, and nothing reached the relay or the clinic around the proxy:
    # the agent was given only the TLS fronts, and they are reached only through tunnels.
    assert set(proxy.tunnels.items) == {clinic_front.origin, relay_front.origin}
    # The proxy saw no credential: not the device's (aiohttp would hand a session's default
    # Authorization header to the proxy as Proxy-Authorization), and none of its own was set.
    assert [sorted(headers) for headers in proxy.headers if "proxy-authorization" in headers] == []
    assert not [headers for headers in proxy.headers if "authorization" in headers]


async def test_a_proxy_that_wants_credentials_gets_them_and_says_so_without(
    stack: DevStack, relay_front: TlsFront, clinic_front: TlsFront, ca: ThrowawayCa
) -> None:
    async with ConnectProxy(authorization=PROXY_CREDENTIALS) as proxy:
        without = Outbound(Proxy("127.0.0.1", proxy.port), ca_bundle=ca.ca_file)
        with_credentials = Outbound(Proxy("127.0.0.1", proxy.port, PROXY_CREDENTIALS), ca_bundle=ca.ca_file)
        credential = stack.users[NURSE].credential
        refused = ClinicClient(clinic_front.url, credential, outbound=without)
        accepted = ClinicClient(clinic_front.url, credential, outbound=with_credentials)
        bus = proxied_bus(stack, relay_front.origin, without)
        admitted = proxied_bus(stack, relay_front.origin, with_credentials)
        try:
            with pytest.raises(ClinicError) as error:
                await refused.turn_credentials(NURSE)
            refusal = f"the proxy 127.0.0.1:{proxy.port} refused proxy_authorization (HTTP 407)"
            assert error.value.reason == refusal
            assert error.value.retry_after == 60.0  # asked again only slowly (test_proxy_refusal.py)
            change = await _status_while_subscribing(bus, ConnectionStatus.RECONNECTING)
            assert change.reason == "the proxy refused proxy_authorization (HTTP 407)"
            assert proxy.tunnels.items == []
            granted = await accepted.turn_credentials(NURSE)
            assert granted.urls
            # Through the tunnel to the relay, which answers (no token here: access denied).
            await _status_while_subscribing(admitted, ConnectionStatus.ACCESS_DENIED)
        finally:
            await asyncio.gather(refused.aclose(), accepted.aclose(), bus.aclose(), admitted.aclose())
        assert set(proxy.tunnels.items) == {clinic_front.origin, relay_front.origin}
        assert proxy.refused.items and set(proxy.refused.items) <= {clinic_front.origin, relay_front.origin}


async def test_a_closed_proxy_port_is_named_by_the_clinic_client_and_the_bus(
    stack: DevStack, relay_front: TlsFront, clinic_front: TlsFront, ca: ThrowawayCa, log_lines: LogLines
) -> None:
    port = free_port()
    outbound = Outbound(Proxy("127.0.0.1", port), ca_bundle=ca.ca_file)
    clinic = ClinicClient(clinic_front.url, stack.users[NURSE].credential, outbound=outbound)
    bus = proxied_bus(stack, relay_front.origin, outbound)
    try:
        with pytest.raises(ClinicError) as error:
            await clinic.turn_credentials(NURSE)
        assert error.value.reason == f"the proxy 127.0.0.1:{port} is unreachable (ConnectionRefusedError)"
        change = await _status_while_subscribing(bus, ConnectionStatus.RECONNECTING)
        assert change.reason == f"proxy 127.0.0.1:{port} unreachable (connection refused)"
    finally:
        await asyncio.gather(clinic.aclose(), bus.aclose())
    started = [line for line in log_lines.lines if "bus connection fault started" in line]
    assert started and f"error=proxy 127.0.0.1:{port} unreachable" in started[0]


async def test_no_proxy_hosts_and_plain_http_go_direct(
    stack: DevStack, clinic_front: TlsFront, proxy: ConnectProxy, ca: ThrowawayCa
) -> None:
    assert stack.clinic is not None
    credential = stack.users[NURSE].credential
    bypassed = Outbound(Proxy("127.0.0.1", proxy.port), no_proxy=("127.0.0.1",), ca_bundle=ca.ca_file)
    proxied = Outbound(Proxy("127.0.0.1", proxy.port), ca_bundle=ca.ca_file)
    clients = [
        ClinicClient(clinic_front.url, credential, outbound=bypassed),  # TLS, but listed in no_proxy
        ClinicClient(stack.clinic.url, credential, outbound=proxied),  # plain http: the proxy is for TLS
    ]
    try:
        for client in clients:
            assert (await client.turn_credentials(NURSE)).urls
    finally:
        await asyncio.gather(*(client.aclose() for client in clients))
    assert proxy.tunnels.items == [] and proxy.headers == []


async def test_the_preflight_names_a_closed_proxy(
    stack: DevStack, relay_front: TlsFront, proxy: ConnectProxy, ca: ThrowawayCa
) -> None:
    environment = {
        **stack.agent_environment(NURSE),
        "TELEHEALTH_ORIGIN": relay_front.origin,
        "TELEHEALTH_SSL": "true",
        "TELEHEALTH_CA_BUNDLE": str(ca.ca_file),
        "TELEHEALTH_REQUEST_TIMEOUT_SECONDS": "5",
    }
    through_proxy = await signaling_round_trip(
        load_settings(environ={**environment, "TELEHEALTH_HTTPS_PROXY": proxy.url})
    )
    assert through_proxy.ok and proxy.tunnels.items == [relay_front.origin]
    closed = free_port()
    failed = await signaling_round_trip(
        load_settings(environ={**environment, "TELEHEALTH_HTTPS_PROXY": f"http://127.0.0.1:{closed}"})
    )
    assert not failed.ok
    assert failed.reason == (
        f"the PubNub origin {relay_front.origin}: proxy 127.0.0.1:{closed} unreachable (connection refused)"
    )


async def test_the_doctors_network_checks_take_the_agents_route(
    stack: DevStack,
    tmp_path: Path,
    relay_front: TlsFront,
    clinic_front: TlsFront,
    proxy: ConnectProxy,
    ca: ThrowawayCa,
) -> None:
    """``doctor`` checks what the agent will do: its origin, clinic and clock checks go through the
    proxy and trust the bundle, and a closed proxy is named rather than the origin."""
    environment = _nurse_environment(stack, tmp_path, relay_front, clinic_front, proxy, ca)
    settings = load_settings(environ=environment)
    origin, clinic, clock = await asyncio.gather(
        check_origin(settings), check_clinic(settings), check_clock(settings)
    )
    assert (origin.status, clinic.status, clock.status) == ("pass", "pass", "pass"), (origin, clinic, clock)
    # The origin check's own handshake and the clinic's and clock's requests: each a tunnel.
    assert proxy.tunnels_to(relay_front.origin) >= 2
    assert proxy.tunnels_to(clinic_front.origin) >= 2
    assert set(proxy.tunnels.items) == {clinic_front.origin, relay_front.origin}

    closed = load_settings(
        environ={**environment, "TELEHEALTH_HTTPS_PROXY": f"http://127.0.0.1:{free_port()}"}
    )
    refused = await check_origin(closed)
    assert refused.status == "fail"
    assert "check https_proxy" in refused.summary, refused


async def test_a_clinic_backend_name_that_does_not_resolve_is_named() -> None:
    clinic = ClinicClient("http://nonexistent.invalid:8080", "not-needed-here")
    try:
        with pytest.raises(ClinicError) as error:
            await clinic.turn_credentials(NURSE)
    finally:
        await clinic.aclose()
    assert (error.value.reason, error.value.status) == (
        "clinic backend unreachable: DNS lookup failed for nonexistent.invalid",
        None,
    )
