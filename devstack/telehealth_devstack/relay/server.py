"""The relay's lifecycle, fault injection and inspection: the one class tests and the devstack use."""

from __future__ import annotations

import asyncio
import contextlib
import json
import pathlib
import time
from types import TracebackType
from typing import Any, Self

from aiohttp import web

from ..http_guard import GuardedServer
from .clock import Clock
from .http import GUARD, build_handler
from .persistence import StateFiles
from .routes import route
from .state import Keys, Limits, RelayState
from .store import FILE_EVENT, OBJECTS_EVENT, StoredMessage

# Encrypted offers from the JavaScript SDK make GET publish lines over 8 kB (aiohttp's default);
# a 32 KiB message percent-encoded can triple, so accept that and answer "Message Too Large" ourselves.
MAX_REQUEST_LINE = 128 * 1024


class Relay:
    """A PubNub-compatible REST relay on loopback, for development and tests only.

    It serves the subset of PubNub's REST API that the Python and JavaScript SDKs use, holds
    everything in memory (bounded), and keeps it across ``stop()``/``start()`` like a broker.

    Bounds: ``max_messages_per_channel`` (history and the catch-up queue each), ``max_channels``
    (least recently used first out; also bounds UUID metadata), ``presence_timeout`` (seconds, for
    clients that send no ``heartbeat``), ``subscribe_timeout`` (an idle long-poll's answer).
    ``clock`` drives token expiry and presence timeouts (pass a ManualClock in tests); timetokens
    always use the real clock. A held long-poll ends with 403 the moment its token is revoked or
    expires, and its user leaves presence then (``held_polls``).

    ``state_dir``: where revoked tokens, stored messages (history) and App Context live, in SQLite
    files, so that a new Relay on the same directory (a restart) still refuses a revoked token and
    serves the same history and metadata, as PubNub's services do. They are read back at the
    first ``start()`` and written through while the relay runs (the files are closed by
    ``stop()``; ``inject_event`` on a stopped relay is not kept). None keeps all of it in memory
    only (nothing is written anywhere; it still survives ``stop()``/``start()`` of this object),
    which is what tests that need no restart want: no files to create or clean up.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        publish_key: str = "pub-c-dev",
        subscribe_key: str = "sub-c-dev",
        secret_key: str = "sec-c-dev",
        enforce_access: bool = False,
        max_messages_per_channel: int = 1000,
        max_channels: int = 10_000,
        presence_timeout: float = 300.0,
        subscribe_timeout: float = 280.0,
        presence_sweep_interval: float = 1.0,
        clock: Clock = time.time,
        state_dir: pathlib.Path | None = None,
    ) -> None:
        if max_messages_per_channel < 1 or max_channels < 1:
            raise ValueError("bounds must be at least 1")
        self._host = host
        self._port = port
        self._sweep_interval = presence_sweep_interval
        self._state_dir = state_dir
        self._state = RelayState(
            keys=Keys(publish_key, subscribe_key, secret_key),
            limits=Limits(
                max_messages_per_channel=max_messages_per_channel,
                max_channels=max_channels,
                presence_timeout=presence_timeout,
                subscribe_timeout=subscribe_timeout,
            ),
            clock=clock,
            enforce_access=enforce_access,
        )
        self._runner: web.BaseRunner | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._restored = False

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Bind and serve. Port 0 picks a free port once; later restarts reuse it."""
        if self._runner is not None:
            raise RuntimeError("relay already started")
        await self._open_state_files()
        # The server cancels a handler whose client went away (``handler_cancellation``): an
        # abandoned long-poll would otherwise stay pending (and its user present) for up to
        # ``subscribe_timeout``. Cancelled, it leaves through ``_wait``'s clean-up at once.
        server = GuardedServer(
            build_handler(self._state, route),
            guard=GUARD,
            max_line_size=MAX_REQUEST_LINE,
            handler_cancellation=True,
        )
        runner = web.ServerRunner(server, handle_signals=False, shutdown_timeout=0.5)
        await runner.setup()
        site = web.TCPSite(runner, self._host, self._port, reuse_address=True)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            await self._close_state_files()
            raise
        self._runner = runner
        if self._port == 0:
            self._port = int(runner.addresses[0][1])
        self._sweeper = asyncio.create_task(self._sweep_presence(), name="relay-presence-sweeper")

    async def stop(self) -> None:
        """Stop serving; open long-polls are cut as a broker going away would.

        What is stored stays (messages, history, presence, metadata, revocations); a stall is lifted.
        """
        runner, self._runner = self._runner, None
        sweeper, self._sweeper = self._sweeper, None
        if sweeper is not None:
            sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sweeper
        if runner is None:
            return
        self._state.drop_polls()
        self._state.held.close()  # token expiry alarms: nothing is held any more
        # Stalled requests would otherwise hold shutdown until aiohttp's timeout.
        self._state.faults.resume()
        try:
            await runner.cleanup()
        finally:
            await self._close_state_files()

    async def _open_state_files(self) -> None:
        if self._state_dir is None:
            return
        files = await asyncio.to_thread(StateFiles.open, self._state_dir)
        try:
            # Read back once: after a stop()/start() of this object, memory is already current.
            snapshot = None if self._restored else await asyncio.to_thread(files.load, self._state.clock())
        except BaseException:
            await asyncio.to_thread(files.close)
            raise
        self._state.attach(files, snapshot)
        self._restored = True

    async def _close_state_files(self) -> None:
        files = self._state.detach()
        if files is not None:
            await asyncio.to_thread(files.close)

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    @property
    def running(self) -> bool:
        return self._runner is not None

    @property
    def state_dir(self) -> pathlib.Path | None:
        return self._state_dir

    @property
    def host(self) -> str:
        return self._host

    @property
    def port(self) -> int:
        if self._port == 0:
            raise RuntimeError("relay has no port until started")
        return self._port

    @property
    def origin(self) -> str:
        """``host:port``, for ``PNConfiguration.origin`` with ``ssl=False``."""
        return f"{self._host}:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.origin}"

    @property
    def publish_key(self) -> str:
        return self._state.keys.publish_key

    @property
    def subscribe_key(self) -> str:
        return self._state.keys.subscribe_key

    @property
    def secret_key(self) -> str:
        return self._state.keys.secret_key

    @property
    def enforce_access(self) -> bool:
        return self._state.enforce_access

    @enforce_access.setter
    def enforce_access(self, value: bool) -> None:
        self._state.enforce_access = value

    # -- fault injection ---------------------------------------------------------------------

    def drop_subscribers(self) -> int:
        """Cut every pending long-poll's connection at once, without an answer; returns how many."""
        return self._state.drop_polls()

    def stall(self) -> None:
        """Hold every request and every answer until ``resume()``."""
        self._state.faults.stall()

    def resume(self) -> None:
        self._state.faults.resume()

    def set_delay(self, seconds: float) -> None:
        """Delay every request by ``seconds`` before it is handled (0 turns it off)."""
        if seconds < 0:
            raise ValueError("delay must be >= 0")
        self._state.faults.delay = seconds

    def fail_next(self, count: int, status: int = 503) -> None:
        """Answer the next ``count`` requests (preflights aside) with ``status`` and change nothing."""
        self._state.faults.fail_next(count, status)

    def inject_event(
        self, channel: str, message_type: int, payload: Any, *, publisher: str | None = None
    ) -> int:
        """Deliver an event to subscribers of ``channel`` as PubNub would; returns its timetoken.

        ``message_type`` 2 is an App Context event and 4 a file event (the ``e`` field). For those
        two a ``payload`` of None gets a typical body: a UUID metadata ``set`` event, or a file
        message with ``file.id`` and ``file.name``. File events also go to history, as PubNub's do.
        """
        if payload is None and message_type == OBJECTS_EVENT:
            payload = {
                "source": "objects",
                "version": "2.0",
                "event": "set",
                "type": "uuid",
                "data": {"id": publisher or "relay", "updated": "2026-01-01T00:00:00.000Z", "eTag": "relay"},
            }
        elif payload is None and message_type == FILE_EVENT:
            payload = {"message": None, "file": {"id": "relay-file", "name": "relay.txt"}}
        stored = message_type == FILE_EVENT  # PubNub keeps file messages in history
        return self._state.deliver(
            channel, payload, publisher=publisher, message_type=message_type, stored=stored
        )

    def expire_presence(self) -> None:
        """Run the presence timeout sweep now (with a ManualClock advanced past the timeout)."""
        self._state.presence.expire()

    # -- inspection --------------------------------------------------------------------------

    def stored_messages(self, channel: str) -> list[StoredMessage]:
        """What history holds for ``channel``, oldest first; ``.payload`` is the JSON value as sent."""
        return self._state.store.history(channel)

    def recent_messages(self, channel: str) -> list[StoredMessage]:
        """Everything recently delivered on ``channel``, ``store=0`` messages and events included."""
        return [m for m in self._state.store.all_messages() if m.channel == channel]

    def occupants(self, channel: str) -> list[str]:
        return sorted(self._state.presence.occupants(channel))

    def pending_subscribers(self) -> int:
        return len(self._state.polls)

    async def wait_for_subscribers(self, count: int) -> None:
        """Return once at least ``count`` long-polls are pending (use with ``asyncio.wait_for``)."""
        await self._state.wait_polls(lambda pending: pending >= count)

    async def wait_for_subscribers_at_most(self, count: int) -> None:
        """Return once at most ``count`` long-polls are pending (use with ``asyncio.wait_for``).

        A long-poll stops being pending when it is answered, dropped, or its client goes away.
        """
        await self._state.wait_polls(lambda pending: pending <= count)

    def dump_text(self) -> str:
        """Everything the relay holds (messages, meta, metadata, presence) as one text.

        Non-ASCII is kept as is so that a search for a marker string finds it however it was written.
        """
        state = self._state
        holdings = {
            "messages": [
                {
                    "channel": m.channel,
                    "timetoken": m.timetoken,
                    "publisher": m.publisher,
                    "payload": m.payload,
                    "meta": m.meta,
                    "type": m.message_type,
                    "custom_message_type": m.custom_message_type,
                }
                for m in state.store.all_messages()
            ],
            "uuid_metadata": state.uuid_metadata.all(),
            "presence": {c: state.presence.occupants(c) for c in state.presence.channels()},
        }
        return json.dumps(holdings, ensure_ascii=False, default=str)

    async def _sweep_presence(self) -> None:
        while True:
            await asyncio.sleep(self._sweep_interval)
            self._state.presence.expire()
