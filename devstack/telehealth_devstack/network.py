"""One client's network, cut and restored: a TCP hop on loopback in front of the relay.

The relay stays up for everyone else (a kiosk's own network drops, not PubNub). While cut, open
connections are reset and new ones are refused at once, as a dead link looks to the SDK. This is
a real TCP path, not a fake: the bus, the SDK and the relay see real connection failures. Used by
the tests and the benchmarks that take a client's network away.

Public API: ``CuttableLink(target_origin)``: ``await start()`` / ``await aclose()`` or ``async
with``; ``origin`` (for the client's ``BusConfig.origin``), ``cut()``, ``restore()``. ``splice(a, b)``
pipes the bytes of two connections both ways until either ends (the test proxies use it too).
"""

from __future__ import annotations

import asyncio
import contextlib
from types import TracebackType


class CuttableLink:
    def __init__(self, target_origin: str) -> None:
        host, _, port = target_origin.rpartition(":")
        self._target = (host, int(port))
        self._server: asyncio.Server | None = None
        self._up = True
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def origin(self) -> str:
        """``host:port`` for the client's ``BusConfig.origin``."""
        assert self._server is not None
        host, port = self._server.sockets[0].getsockname()[:2]
        return f"{host}:{port}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)

    async def __aenter__(self) -> CuttableLink:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._server is not None:
            self._server.close()
        self.cut()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)
        if self._server is not None:
            await self._server.wait_closed()

    def cut(self) -> None:
        """Reset every open connection; refuse new ones until ``restore``."""
        self._up = False
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    def restore(self) -> None:
        self._up = True

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self._up:
            writer.transport.abort()
            return
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(*self._target)
        except OSError:
            writer.transport.abort()
            return
        if not self._up:
            # Cut while this connection was being made: it must not outlive the cut.
            writer.transport.abort()
            upstream_writer.transport.abort()
            return
        self._writers |= {writer, upstream_writer}
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await splice((reader, writer), (upstream_reader, upstream_writer))
        finally:
            self._tasks.discard(task)
            for end in (writer, upstream_writer):
                self._writers.discard(end)
                end.transport.abort()


Connection = tuple[asyncio.StreamReader, asyncio.StreamWriter]


async def splice(one: Connection, other: Connection) -> None:
    """Pipe bytes both ways, untouched, until either side ends; then both are ended."""
    await asyncio.gather(_pipe(one[0], other[1]), _pipe(other[0], one[1]))


async def _pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError, OSError):
        while data := await source.read(65536):
            sink.write(data)
            await sink.drain()
    # One side ended: end the other, or a half-open pair would hold the link.
    sink.transport.abort()
