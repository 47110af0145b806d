"""TURN over TLS (``turns:``) on a hospital network: aioice's TCP connection to real coturn's TLS
listener made through the CONNECT proxy, TLS end to end inside the tunnel and verified with the
CA bundle; the same in a media child, which is handed the route over its stdin and holds a
relay-only echo call through it. Without the bundle the certificate is named; a closed proxy too.
(Real time: the echo call is paced media; tests/conftest.py lists this file.)"""

from __future__ import annotations

import socket

import pytest

from telehealth_client.media.call import CallError, probe_turn
from telehealth_client.media.common import TurnConfig
from telehealth_client.media.worker import MediaWorker
from telehealth_client.outbound import Outbound, Proxy
from telehealth_devstack.turn import TurnServer, turn_rest_credentials
from tests.support.connect_proxy import ConnectProxy

pytestmark = pytest.mark.integration


def _turn(server: TurnServer, outbound: Outbound) -> TurnConfig:
    """The clinic's hand-out when TURN listens on 443: a UDP URL first, then ``turns:``."""
    username, credential = turn_rest_credentials(server.secret, "kiosk-1", 600)
    return TurnConfig((*server.urls, *server.tls_urls), username, credential, outbound)


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


async def test_the_turn_probe_goes_through_the_proxy_with_the_bundle(
    tls_turn: TurnServer, proxy: ConnectProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)  # the system's CAs: not the TURN server's
    target = f"127.0.0.1:{tls_turn.tls_port}"
    via_proxy = Proxy("127.0.0.1", proxy.port)
    await probe_turn(_turn(tls_turn, Outbound(via_proxy, ca_bundle=tls_turn.ca_file)))
    assert proxy.tunnels.items == [target]  # the TLS URL, though the UDP one came first

    with pytest.raises(CallError) as untrusted:
        await probe_turn(_turn(tls_turn, Outbound(via_proxy)))
    assert (untrusted.value.code, untrusted.value.reason) == (
        "turn-unreachable",
        "TURN server's TLS certificate is not trusted (unable to get local issuer certificate)",
    )
    assert proxy.tunnels.items == [target, target]  # the tunnel opened; TLS inside it refused

    closed = _closed_port()
    with pytest.raises(CallError) as unreachable:
        await probe_turn(_turn(tls_turn, Outbound(Proxy("127.0.0.1", closed), ca_bundle=tls_turn.ca_file)))
    assert unreachable.value.reason == (
        f"TURN server unreachable: the proxy 127.0.0.1:{closed} is unreachable (ConnectionRefusedError)"
    )


async def test_a_media_child_holds_an_echo_call_through_the_proxy(
    tls_turn: TurnServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The child trusts the TURN server's CA only through the route it is handed, not its environment.
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    async with ConnectProxy(authorization="kiosk-1:pa:ss") as proxy:
        outbound = Outbound(Proxy("127.0.0.1", proxy.port, "kiosk-1:pa:ss"), ca_bundle=tls_turn.ca_file)
        child = await MediaWorker.spawn()
        try:
            outcome = await child.echo_test(
                _turn(tls_turn, outbound), relay_only=True, seconds=1.0, connect_within=20.0
            )
        finally:
            await child.aclose()
        assert outcome["turn"]["ok"], outcome["turn"]
        assert outcome["media"]["ok"], outcome["media"]
        assert outcome["media"]["frames"]["video"] > 0
        # The probe's allocation, then the echo call's sides' own: all tunnelled, none refused.
        assert len(proxy.tunnels.items) >= 3
        assert set(proxy.tunnels.items) == {f"127.0.0.1:{tls_turn.tls_port}"}
        assert proxy.refused.items == []
