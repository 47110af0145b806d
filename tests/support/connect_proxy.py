"""A real HTTP CONNECT proxy on loopback, as a hospital's: it opens TCP tunnels and counts them.

Every tunnel is a real TCP connection to its target with the bytes piped both ways untouched
(TLS runs end to end inside it, as through a real proxy); anything but ``CONNECT`` is answered 405.
With ``authorization`` (``user:password``) a CONNECT without those Basic credentials is answered
407. ``tunnels`` records each tunnel's target (``host:port``) as it is opened (a ``Recorder``, so a
test waits for one); ``refused`` records the targets of the CONNECTs it refused, and ``headers``
the headers of every CONNECT.

Public API: ``ConnectProxy(authorization=None)`` as ``async with``; ``url``, ``port``,
``tunnels_to(target)``, ``tunnels``, ``refused``, ``headers``.
"""

from __future__ import annotations

import asyncio
import base64

from telehealth_devstack.network import splice
from tests.support.loopback_server import LoopbackServer
from tests.support.recorder import Recorder

MAX_HEADER_BYTES = 16 * 1024


class ConnectProxy(LoopbackServer):
    def __init__(self, *, authorization: str | None = None) -> None:
        self._expected = (
            None
            if authorization is None
            else "Basic " + base64.b64encode(authorization.encode("utf-8")).decode("ascii")
        )
        super().__init__()
        self.tunnels = Recorder()
        self.refused = Recorder()
        self.headers: list[dict[str, str]] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def tunnels_to(self, target: str) -> int:
        return sum(1 for opened in self.tunnels.items if opened == target)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        if len(head) > MAX_HEADER_BYTES:
            return
        request_line, *header_lines = head.decode("latin-1").split("\r\n")
        headers = {
            name.strip().lower(): value.strip()
            for name, _, value in (line.partition(":") for line in header_lines if line)
        }
        self.headers.append(headers)
        method, _, rest = request_line.partition(" ")
        target = rest.partition(" ")[0]
        if method != "CONNECT":
            writer.write(b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n")
            await writer.drain()
            return
        if self._expected is not None and headers.get("proxy-authorization") != self._expected:
            self.refused.add(target)
            writer.write(
                b"HTTP/1.1 407 Proxy Authentication Required\r\n"
                b'Proxy-Authenticate: Basic realm="hospital"\r\nContent-Length: 0\r\n\r\n'
            )
            await writer.drain()
            return
        host, _, port = target.rpartition(":")
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(host.strip("[]"), int(port))
        except (OSError, ValueError):
            self.refused.add(target)
            writer.write(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
            await writer.drain()
            return
        with self._held(upstream_writer):
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            await writer.drain()
            self.tunnels.add(target)
            await splice((reader, writer), (upstream_reader, upstream_writer))
