"""A TCP connection through an HTTP proxy's ``CONNECT`` tunnel, as a plain socket.

For what has no proxy support of its own: aioice's TURN over TCP or TLS (``media/ice.py``) makes
its connection with ``loop.create_connection``, which takes a connected socket (``sock=``) and
runs TLS over it, end to end with the TURN server. aiohttp's own tunnels serve PubNub and the
clinic.

The proxy's answer is read up to its blank line and no further; nothing of the tunnelled protocol
can be in it, as the far end speaks only after we do (TLS's ClientHello, TURN's Allocate).

Public API: ``await open_tunnel(proxy, host, port, within=...) -> socket.socket``; ``TunnelError``
(a ConnectionError whose message names the proxy and what it said, never its credentials;
``credentials_refused``: the proxy answered 407, so trying again soon would only repeat the
refused password). It never retries by itself.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Final

from telehealth_client.outbound import PROXY_REFUSED, Proxy

TUNNEL_SECONDS: Final = 10.0
MAX_ANSWER_BYTES: Final = 16 * 1024  # a CONNECT answer is a status line and a few headers


class TunnelError(ConnectionError):
    """The proxy could not be reached, or would not open the tunnel; ``reason`` says which."""

    def __init__(self, proxy: Proxy, reason: str, *, credentials_refused: bool = False) -> None:
        super().__init__(f"the proxy {proxy.address} {reason}")
        self.reason = reason
        self.credentials_refused = credentials_refused


async def open_tunnel(proxy: Proxy, host: str, port: int, *, within: float = TUNNEL_SECONDS) -> socket.socket:
    """A non-blocking socket connected to ``host:port`` through ``proxy``; the caller owns it."""
    try:
        async with asyncio.timeout(within):
            sock = await _connect(proxy)
            try:
                await _ask(sock, proxy, host, port)
            except BaseException:
                sock.close()
                raise
    except TimeoutError:
        raise TunnelError(proxy, f"did not open the tunnel within {within:g} s") from None
    return sock


async def _connect(proxy: Proxy) -> socket.socket:
    loop = asyncio.get_running_loop()
    try:
        addresses = await loop.getaddrinfo(proxy.host, proxy.port, type=socket.SOCK_STREAM)
    except OSError:
        raise TunnelError(proxy, "cannot be found (DNS lookup failed)") from None
    failure: OSError | None = None
    for family, kind, protocol, _, address in addresses:
        sock = socket.socket(family, kind, protocol)
        sock.setblocking(False)
        try:
            await loop.sock_connect(sock, address)
        except OSError as exc:
            sock.close()
            failure = exc
            continue
        except BaseException:
            sock.close()
            raise
        return sock
    why = type(failure).__name__ if failure is not None else "no address"
    raise TunnelError(proxy, f"is unreachable ({why})")


async def _ask(sock: socket.socket, proxy: Proxy, host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    if not host.isascii():  # an internationalised name goes on the wire as its IDNA form
        host = host.encode("idna").decode("ascii")
    target = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    lines = [f"CONNECT {target} HTTP/1.1", f"Host: {target}"]
    header = proxy.authorization_header()
    if header is not None:
        lines.append(f"Proxy-Authorization: {header}")
    try:
        await loop.sock_sendall(sock, ("\r\n".join(lines) + "\r\n\r\n").encode("ascii"))
        answer = b""
        while b"\r\n\r\n" not in answer:
            chunk = await loop.sock_recv(sock, 1024)
            if not chunk:
                raise TunnelError(proxy, "closed the connection without answering the CONNECT")
            answer += chunk
            if len(answer) > MAX_ANSWER_BYTES:
                raise TunnelError(proxy, "answered the CONNECT with an oversized header")
    except OSError as exc:
        if isinstance(exc, TunnelError):
            raise
        raise TunnelError(proxy, f"dropped the connection ({type(exc).__name__})") from None
    head, _, rest = answer.partition(b"\r\n\r\n")
    status = _status(head.split(b"\r\n", 1)[0])
    if status is None:
        raise TunnelError(proxy, "did not answer the CONNECT in HTTP")
    if status == 407:
        raise TunnelError(proxy, "refused proxy_authorization (HTTP 407)", credentials_refused=True)
    if status != 200:
        raise TunnelError(proxy, f"{PROXY_REFUSED.removeprefix('proxy ')} to {target} (HTTP {status})")
    if rest:
        raise TunnelError(proxy, "sent data before the tunnel was used")


def _status(line: bytes) -> int | None:
    """The status code of ``HTTP/1.x NNN reason``, None for anything else."""
    parts = line.split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
        return None
    return int(parts[1])
