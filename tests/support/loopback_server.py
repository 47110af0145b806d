"""A TCP server on loopback that owns its connections: the lifecycle the test proxies share.

A subclass writes ``_serve(reader, writer)`` for one connection (and may give ``_ssl_context``);
``LoopbackServer`` listens on ``127.0.0.1`` with a free port, tracks each connection's task and
streams, and on ``async with`` exit closes the listener, resets every open connection and awaits
every connection task. ``_held(upstream_writer)`` tracks an upstream connection a ``_serve`` opens
and resets it when the block ends.

Public API: ``LoopbackServer`` (to subclass) as ``async with``; ``port``.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Iterator
from types import TracebackType
from typing import Self


class LoopbackServer:
    def __init__(self) -> None:
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def port(self) -> int:
        assert self._server is not None
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def _ssl_context(self) -> ssl.SSLContext | None:
        return None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        context = await self._ssl_context()
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0, ssl=context)
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

    @contextlib.contextmanager
    def _held(self, upstream_writer: asyncio.StreamWriter) -> Iterator[None]:
        self._writers.add(upstream_writer)
        try:
            yield
        finally:
            self._writers.discard(upstream_writer)
            upstream_writer.transport.abort()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.add(writer)
        try:
            await self._serve(reader, writer)
        except (ConnectionError, OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass  # the client or the upstream went away: this connection is over
        finally:
            self._tasks.discard(task)
            self._writers.discard(writer)
            writer.transport.abort()
