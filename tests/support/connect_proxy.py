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
import contextlib
from types import TracebackType
from typing import Self

from tests.support.recorder import Recorder

MAX_HEADER_BYTES = 16 * 1024


class ConnectProxy:
    def __init__(self, *, authorization: str | None = None) -> None:
        self._expected = (
            None
            if authorization is None
            else "Basic " + base64.b64encode(authorization.encode("utf-8")).decode("ascii")
        )
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self.tunnels = Recorder()
        self.refused = Recorder()
        self.headers: list[dict[str, str]] = []

    @property
    def port(self) -> int:
        assert self._server is not None
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def tunnels_to(self, target: str) -> int:
        return sum(1 for opened in self.tunnels.items if opened == target)

    async def __aenter__(self) -> Self:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)
        await self._server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.add(writer)
        try:
            await self._serve(reader, writer)
        except (ConnectionError, OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            self._tasks.discard(task)
            self._writers.discard(writer)
            writer.transport.abort()

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
        self._writers.add(upstream_writer)
        try:
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            await writer.drain()
            self.tunnels.add(target)
            await asyncio.gather(_pipe(reader, upstream_writer), _pipe(upstream_reader, writer))
        finally:
            self._writers.discard(upstream_writer)
            upstream_writer.transport.abort()


async def _pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError, OSError):
        while data := await source.read(65536):
            sink.write(data)
            await sink.drain()
    # One side ended: end the other, or a half-open tunnel would hold the connection.
    sink.transport.abort()
