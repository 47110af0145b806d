"""coturn on loopback: it starts, answers, accepts fresh REST credentials and refuses stale ones."""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
import stat
import sys
import time
from pathlib import Path

import pytest
from aioice import stun
from aioice.turn import create_turn_endpoint

from telehealth_devstack.turn import (
    TurnServer,
    TurnServerError,
    stun_binding_ok,
    turn_rest_credentials,
)
from tests.support.clinic import ClinicApi, ClinicFactory

pytestmark = pytest.mark.integration


async def _allocate(server: TurnServer, username: str, credential: str) -> tuple[str, int]:
    transport, _ = await create_turn_endpoint(
        asyncio.DatagramProtocol, (server.host, server.port), username, credential
    )
    try:
        relayed: tuple[str, int] = transport.get_extra_info("sockname")
        return relayed
    finally:
        transport.close()


def test_rest_credentials_match_coturn_scheme() -> None:
    # Reference value from: printf '1700000600:kiosk-7' | openssl dgst -sha1 -hmac s3cret -binary | base64
    assert turn_rest_credentials("s3cret", "kiosk-7", 600, now=1_700_000_000) == (
        "1700000600:kiosk-7",
        "DaKdSqvkxDilSyGYqMaEnxNGr1E=",
    )


def test_rest_credentials_expire_after_ttl() -> None:
    before = time.time()
    username, _ = turn_rest_credentials("s", "u1", 300)
    expiry = int(username.split(":", 1)[0])
    assert int(before) + 300 <= expiry <= int(time.time()) + 300


def test_rest_credentials_refuse_non_positive_ttl() -> None:
    with pytest.raises(ValueError, match="ttl_seconds"):
        turn_rest_credentials("s", "u1", 0)


async def test_server_answers_stun_on_its_urls(turn_server: TurnServer) -> None:
    assert turn_server.urls == [f"turn:127.0.0.1:{turn_server.port}?transport=udp"]
    assert turn_server.running
    assert await stun_binding_ok("127.0.0.1", turn_server.port, wait_seconds=2.0)


async def test_fresh_credentials_allocate_a_relay_address(turn_server: TurnServer) -> None:
    username, credential = turn_rest_credentials(turn_server.secret, "kiosk-1", 600)
    host, port = await _allocate(turn_server, username, credential)
    assert host == "127.0.0.1"
    assert port != turn_server.port


async def test_expired_credentials_are_refused_with_401(turn_server: TurnServer) -> None:
    username, credential = turn_rest_credentials(turn_server.secret, "kiosk-1", 60, now=time.time() - 3600)
    with pytest.raises(stun.TransactionFailed) as failure:
        await _allocate(turn_server, username, credential)
    assert failure.value.response.attributes["ERROR-CODE"][0] == 401


async def test_credentials_from_another_secret_are_refused(turn_server: TurnServer) -> None:
    username, credential = turn_rest_credentials("not-" + turn_server.secret, "kiosk-1", 600)
    with pytest.raises(stun.TransactionFailed) as failure:
        await _allocate(turn_server, username, credential)
    assert failure.value.response.attributes["ERROR-CODE"][0] == 401


async def test_stop_ends_the_process_and_frees_the_port() -> None:
    server = TurnServer()
    await server.start()
    port = server.port
    await server.stop()
    assert not server.running
    assert not await stun_binding_ok("127.0.0.1", port, wait_seconds=0.3)


async def test_busy_port_fails_fast_with_a_clear_error(turn_server: TurnServer) -> None:
    with pytest.raises(TurnServerError, match="already in use"):
        async with TurnServer(port=turn_server.port, start_timeout=5.0):
            pass


async def test_missing_binary_points_to_the_install_script() -> None:
    with pytest.raises(TurnServerError, match=r"scripts/install-system-deps\.sh"):
        async with TurnServer(executable="no-such-turnserver"):
            pass


async def test_restart_on_the_same_port_accepts_the_same_secret() -> None:
    async with TurnServer() as first:
        port, secret = first.port, first.secret
    async with TurnServer(port=port, secret=secret) as second:
        username, credential = turn_rest_credentials(secret, "kiosk-1", 600)
        host, _ = await _allocate(second, username, credential)
    assert second.port == port
    assert host == "127.0.0.1"


async def test_clinic_turn_credentials_allocate_on_coturn(
    make_clinic: ClinicFactory, turn_server: TurnServer, http: ClinicApi
) -> None:
    clinic = await make_clinic(turn_secret=turn_server.secret, turn_urls=turn_server.urls)
    status, creds = await http.at(clinic).post("/api/telemedicine/turn-credentials", {"userId": "pat-1"})
    assert status == 200
    assert creds["urls"] == turn_server.urls
    transport, _ = await create_turn_endpoint(
        asyncio.DatagramProtocol, ("127.0.0.1", turn_server.port), creds["username"], creds["credential"]
    )
    try:
        assert transport.get_extra_info("sockname")[0] == "127.0.0.1"
    finally:
        transport.close()


async def test_coturn_ends_when_the_process_that_started_it_is_killed() -> None:
    # A test run or demo killed with SIGKILL stops nothing itself: coturn must not outlive it.
    owner = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        "import asyncio\n"
        "from telehealth_devstack.turn import TurnServer\n"
        "async def main():\n"
        "    server = TurnServer()\n"
        "    await server.start()\n"
        "    print(server.pid, flush=True)\n"
        "    await asyncio.Event().wait()\n"
        "asyncio.run(main())\n",
        stdout=asyncio.subprocess.PIPE,
    )
    assert owner.stdout is not None
    coturn = int(await asyncio.wait_for(owner.stdout.readline(), 30))
    # coturn is not our child: a pidfd becomes readable when it exits.
    pidfd = os.pidfd_open(coturn)
    exited = asyncio.get_running_loop().create_future()
    asyncio.get_running_loop().add_reader(pidfd, lambda: exited.done() or exited.set_result(None))
    try:
        assert not exited.done()
        owner.kill()
        await owner.wait()
        await asyncio.wait_for(exited, 10)
    finally:
        asyncio.get_running_loop().remove_reader(pidfd)
        os.close(pidfd)


def _exposure(server: TurnServer) -> tuple[bytes, str, int]:
    """coturn's command line as every local user sees it, its configuration file and that file's mode."""
    assert server.pid is not None and server.config_path is not None
    cmdline = Path(f"/proc/{server.pid}/cmdline").read_bytes()
    return cmdline, server.config_path.read_text(), stat.S_IMODE(server.config_path.stat().st_mode)


async def test_the_secret_is_not_on_coturns_command_line(turn_server: TurnServer) -> None:
    # Any local user reads /proc/<pid>/cmdline; with the secret they could mint TURN credentials.
    cmdline, config, mode = await asyncio.to_thread(_exposure, turn_server)
    assert turn_server.secret.encode() not in cmdline
    assert f"static-auth-secret={turn_server.secret}\n" in config
    assert mode == 0o600
    # and coturn reads it: credentials made with that secret allocate, on a relay port in its range.
    username, credential = turn_rest_credentials(turn_server.secret, "kiosk-1", 600)
    host, port = await _allocate(turn_server, username, credential)
    low, high = turn_server.relay_ports
    assert host == "127.0.0.1" and low <= port <= high


def _tls_handshake(server: TurnServer, cafile: Path) -> dict[str, object]:
    """A TLS handshake with the TURN server's TLS listener, verified against ``cafile``; its certificate."""
    context = ssl.create_default_context(cafile=str(cafile))
    with (
        socket.create_connection((server.host, server.tls_port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        certificate = tls.getpeercert()
    assert certificate is not None
    return dict(certificate)


def _key_file_modes(directory: Path) -> list[int]:
    return [stat.S_IMODE(path.stat().st_mode) for path in directory.iterdir() if path.suffix == ".key"]


async def test_the_tls_listener_is_verified_against_its_ca_and_survives_a_restart() -> None:
    async with TurnServer(tls=True) as server:
        assert server.urls == [f"turn:127.0.0.1:{server.port}?transport=udp"]  # as without TLS
        assert server.tls_urls == [f"turns:127.0.0.1:{server.tls_port}?transport=tcp"]
        assert server.tls_port != server.port
        certificate = await asyncio.to_thread(_tls_handshake, server, server.ca_file)
        assert ("IP Address", "127.0.0.1") in certificate["subjectAltName"]  # type: ignore[operator]
        assert await asyncio.to_thread(_key_file_modes, server.ca_file.parent) == [0o600]
        ca, tls_port = server.ca_file, server.tls_port
        await server.restart()
        # Clients that trust the CA go on trusting the restarted server, on the same port.
        assert (server.ca_file, server.tls_port) == (ca, tls_port)
        await asyncio.to_thread(_tls_handshake, server, ca)
    assert not ca.exists()  # stopped: the CA and the key are gone


async def test_a_tls_listener_with_another_ca_is_refused() -> None:
    async with TurnServer(tls=True) as server, TurnServer(tls=True) as other:
        with pytest.raises(ssl.SSLCertVerificationError):
            await asyncio.to_thread(_tls_handshake, server, other.ca_file)


def test_without_tls_there_is_no_turns_url() -> None:
    with pytest.raises(RuntimeError, match="tls=True"):
        _ = TurnServer().tls_urls
    with pytest.raises(ValueError, match="tls_port"):
        TurnServer(tls_port=5349)
    with pytest.raises(ValueError, match="tls_port"):
        TurnServer(tls=True, port=5349, tls_port=5349)


@pytest.mark.parametrize("secret", ["", "two words", "line\nno-auth", "x#y"])
def test_a_secret_the_configuration_file_cannot_hold_is_refused(secret: str) -> None:
    # A line break would add options of its own to coturn's configuration (no-auth, say).
    with pytest.raises(ValueError, match=r"^secret: "):
        TurnServer(secret=secret)
