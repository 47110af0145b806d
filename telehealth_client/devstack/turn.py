"""coturn on loopback for development and tests, and coturn's REST credential scheme.

FOR DEVELOPMENT AND TESTS ONLY. ``TurnServer`` starts Debian's ``turnserver`` as a
child process on 127.0.0.1 with a random shared secret (``--use-auth-secret``), waits
until it answers a STUN binding request, and stops it again. Production kiosks use the
hospital's TURN server; only ``turn_rest_credentials`` is meant for a real backend.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ctypes
import hashlib
import hmac
import logging
import random
import secrets
import shutil
import signal
import socket
import struct
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Self

logger = logging.getLogger(__name__)

STUN_MAGIC_COOKIE = 0x2112A442
_BINDING_REQUEST = 0x0001
_BINDING_SUCCESS = 0x0101
_RELAY_WINDOW = 200  # relay ports per server: enough for tests, small enough to share the machine


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when the process that started coturn dies, even by SIGKILL.

    coturn runs in its own session (a terminal's Ctrl-C must reach us first), so nothing else
    would end it; a killed test run or demo left orphaned coturn processes behind.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


_PR_SET_PDEATHSIG = 1  # linux/prctl.h


class TurnServerError(RuntimeError):
    """coturn is missing, would not start, or did not answer in time."""


def turn_rest_credentials(
    secret: str, user_id: str, ttl_seconds: int, now: float | None = None
) -> tuple[str, str]:
    """Time-limited TURN credentials in coturn's REST scheme (``--use-auth-secret``).

    The username is ``"{expiry_unix}:{user_id}"`` and the credential is
    base64(HMAC-SHA1(secret, username)); coturn recomputes the HMAC and refuses the
    username once its expiry is in the past.
    """
    if ttl_seconds <= 0:
        raise ValueError("ttl_seconds must be positive; pass an earlier `now` for expired credentials")
    expiry = int(time.time() if now is None else now) + ttl_seconds
    username = f"{expiry}:{user_id}"
    digest = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return username, base64.b64encode(digest).decode("ascii")


def _port_is_free(port: int) -> bool:
    """True if ``port`` can be bound on 127.0.0.1 for both UDP and TCP (coturn listens on both)."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind(("127.0.0.1", port))
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as a server would
            tcp.bind(("127.0.0.1", port))
    except OSError:
        return False
    return True


def _free_port() -> int:
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind(("127.0.0.1", 0))
            port: int = udp.getsockname()[1]
        if _port_is_free(port):
            return port
    raise TurnServerError("no free UDP+TCP port on 127.0.0.1")


def _binding_request() -> tuple[bytes, bytes]:
    transaction_id = secrets.token_bytes(12)
    return struct.pack("!HHI", _BINDING_REQUEST, 0, STUN_MAGIC_COOKIE) + transaction_id, transaction_id


def _is_binding_success(data: bytes, transaction_id: bytes) -> bool:
    if len(data) < 20:
        return False
    msg_type, _length, cookie = struct.unpack("!HHI", data[:8])
    return msg_type == _BINDING_SUCCESS and cookie == STUN_MAGIC_COOKIE and data[8:20] == transaction_id


class _StunProbe(asyncio.DatagramProtocol):
    def __init__(self, transaction_id: bytes) -> None:
        self.answered: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._transaction_id = transaction_id

    def datagram_received(self, data: bytes, addr: tuple[str | object, int]) -> None:
        if _is_binding_success(data, self._transaction_id) and not self.answered.done():
            self.answered.set_result(None)

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable while coturn is still binding: keep probing.
        pass


async def stun_binding_ok(host: str, port: int, wait_seconds: float) -> bool:
    """Send one STUN binding request over UDP; True if a matching success answer arrives in time."""
    request, transaction_id = _binding_request()
    loop = asyncio.get_running_loop()
    transport, probe = await loop.create_datagram_endpoint(
        lambda: _StunProbe(transaction_id), remote_addr=(host, port)
    )
    try:
        transport.sendto(request)
        try:
            await asyncio.wait_for(asyncio.shield(probe.answered), wait_seconds)
        except TimeoutError:
            return False
        return True
    finally:
        transport.close()


class TurnServer:
    """coturn on 127.0.0.1 with a shared secret; an async context manager.

    ``urls`` is what an RTCIceServer needs; credentials come from
    ``turn_rest_credentials(server.secret, user_id, ttl)``.
    """

    def __init__(
        self,
        *,
        realm: str = "telehealth.local",
        secret: str | None = None,
        port: int | None = None,
        start_timeout: float = 10.0,
        stop_timeout: float = 5.0,
        executable: str = "turnserver",
    ) -> None:
        self.realm = realm
        self.secret = secret if secret is not None else secrets.token_urlsafe(32)
        self._requested_port = port
        self._start_timeout = start_timeout
        self._stop_timeout = stop_timeout
        self._executable = executable
        self._port: int | None = None
        self._process: asyncio.subprocess.Process | None = None
        self._workdir: tempfile.TemporaryDirectory[str] | None = None

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("TurnServer is not started")
        return self._port

    @property
    def host(self) -> str:
        return "127.0.0.1"

    @property
    def urls(self) -> list[str]:
        return [f"turn:127.0.0.1:{self.port}?transport=udp"]

    @property
    def log_path(self) -> Path | None:
        """coturn's log file while the server runs (it holds no secrets, only usernames)."""
        return Path(self._workdir.name) / "turnserver.log" if self._workdir is not None else None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.returncode is None

    def _command(self, executable: str, port: int, workdir: Path) -> list[str]:
        min_port = random.randrange(49152, 65535 - _RELAY_WINDOW)
        return [
            executable,
            "-n",  # no configuration file: everything is on this command line
            f"--listening-port={port}",
            "--listening-ip=127.0.0.1",
            "--relay-ip=127.0.0.1",
            # Development only: lets two peers on this machine reach each other's relay
            # addresses on 127.0.0.1. A production TURN server must never allow this.
            "--allow-loopback-peers",
            "--no-multicast-peers",
            f"--min-port={min_port}",
            f"--max-port={min_port + _RELAY_WINDOW - 1}",
            "--use-auth-secret",
            f"--static-auth-secret={self.secret}",
            f"--realm={self.realm}",
            "--fingerprint",
            "--no-tls",
            "--no-dtls",
            "--no-cli",
            "--no-rfc5780",
            "--no-software-attribute",
            f"--userdb={workdir / 'turndb'}",
            f"--pidfile={workdir / 'turnserver.pid'}",
            f"--log-file={workdir / 'turnserver.log'}",
            "--simple-log",
            "--no-stdout-log",
        ]

    async def start(self) -> None:
        if self._process is not None:
            raise RuntimeError("TurnServer is already started")
        executable = shutil.which(self._executable)
        if executable is None:
            raise TurnServerError(
                f"coturn's '{self._executable}' was not found on PATH; run scripts/install-system-deps.sh"
            )
        # A port picked by us can be taken before coturn binds it: retry with another one.
        attempts = 1 if self._requested_port else 3
        for attempt in range(1, attempts + 1):
            try:
                await self._start_once(executable, self._requested_port or _free_port())
                break
            except TurnServerError:
                await self.stop()
                if attempt == attempts:
                    raise
            except BaseException:
                await self.stop()
                raise
        logger.info("turn_started port=%d realm=%s", self.port, self.realm)

    async def _start_once(self, executable: str, port: int) -> None:
        # Checked first because another coturn on the port would answer our readiness probe.
        if not _port_is_free(port):
            raise TurnServerError(f"127.0.0.1:{port} is already in use")
        self._workdir = tempfile.TemporaryDirectory(prefix="telehealth-turn-")
        # The secret is on the command line: acceptable for a loopback dev server only.
        self._process = await asyncio.create_subprocess_exec(
            *self._command(executable, port, Path(self._workdir.name)),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
            start_new_session=True,  # a Ctrl-C in the terminal reaches us, not coturn
            preexec_fn=_die_with_parent,
        )
        self._port = port
        await self._wait_ready()

    async def _wait_ready(self) -> None:
        assert self._process is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._start_timeout
        exited = asyncio.ensure_future(self._process.wait())
        try:
            while True:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    raise TurnServerError(
                        f"coturn did not answer STUN on 127.0.0.1:{self.port} within "
                        f"{self._start_timeout:.0f} s{self._log_tail()}"
                    )
                # Each probe waits up to 50 ms (loopback answers in under 1 ms): a paced retry, not a sleep.
                probe = asyncio.ensure_future(stun_binding_ok("127.0.0.1", self.port, min(0.05, remaining)))
                try:
                    done, _ = await asyncio.wait({probe, exited}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    if not probe.done():
                        probe.cancel()
                        with contextlib.suppress(asyncio.CancelledError):
                            await probe
                if exited in done:
                    code = self._process.returncode
                    raise TurnServerError(f"coturn exited with code {code} during start-up{self._log_tail()}")
                if probe.result():
                    return
                if self._port_in_use():
                    raise TurnServerError(f"127.0.0.1:{self.port} is already in use{self._log_tail()}")
        finally:
            if not exited.done():
                exited.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await exited

    def _port_in_use(self) -> bool:
        # coturn retries a busy port forever instead of exiting; its log says so at once.
        path = self.log_path
        return path is not None and path.exists() and "Cannot bind" in path.read_text(errors="replace")

    def _log_tail(self, lines: int = 15) -> str:
        path = self.log_path
        if path is None or not path.exists():
            return ""
        text = path.read_text(errors="replace").splitlines()[-lines:]
        return "; coturn log:\n" + "\n".join(text) if text else ""

    async def stop(self) -> None:
        process, self._process = self._process, None
        try:
            if process is not None and process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    process.send_signal(signal.SIGTERM)
                try:
                    await asyncio.wait_for(process.wait(), self._stop_timeout)
                except TimeoutError:
                    logger.warning("turn_kill pid=%d reason=no exit after SIGTERM", process.pid)
                    with contextlib.suppress(ProcessLookupError):
                        process.kill()
                    await process.wait()
            elif process is not None:
                await process.wait()
        finally:
            if self._workdir is not None:
                self._workdir.cleanup()
                self._workdir = None
            if process is not None:
                logger.info("turn_stopped port=%s", self._port)

    async def restart(self) -> None:
        """Stop coturn and start it again on the same port with the same secret (its allocations
        are gone: what a TURN server's restart does to the calls through it)."""
        port = self.port
        await self.stop()
        requested, self._requested_port = self._requested_port, port
        try:
            await self.start()
        finally:
            self._requested_port = requested

    @property
    def pid(self) -> int | None:
        """coturn's process ID while it runs."""
        return self._process.pid if self.running and self._process is not None else None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()


__all__ = ["TurnServer", "TurnServerError", "stun_binding_ok", "turn_rest_credentials"]
