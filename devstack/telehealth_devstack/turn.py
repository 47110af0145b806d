"""coturn on loopback for development and tests, and coturn's REST credential scheme.

FOR DEVELOPMENT AND TESTS ONLY. ``TurnServer`` starts Debian's ``turnserver`` as a
child process on 127.0.0.1 with a random shared secret (``--use-auth-secret``), waits
until it answers a STUN binding request, and stops it again. Its options, the secret
among them, are in a 0600 file in its working directory, never on its command line
(``/proc/<pid>/cmdline`` is readable by every local user). With ``tls=True`` it also
listens for TURN over TLS with a certificate from a throwaway CA (``ca_file``), as the
hospital's TURN server on 443 does. Production kiosks use the hospital's TURN server;
only ``turn_rest_credentials`` is meant for a real backend.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime
import hashlib
import hmac
import ipaddress
import logging
import random
import secrets
import shutil
import signal
import socket
import struct
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from telehealth_devstack.private_file import write_private

logger = logging.getLogger(__name__)

STUN_MAGIC_COOKIE = 0x2112A442
_BINDING_REQUEST = 0x0001
_BINDING_SUCCESS = 0x0101
_RELAY_WINDOW = 200  # relay ports per server: enough for tests, small enough to share the machine


def _dying_with_parent(command: list[str]) -> list[str]:
    """``command`` that gets SIGTERM when the process that started it dies, even by SIGKILL.

    coturn runs in its own session (a terminal's Ctrl-C must reach us first), so nothing else
    would end it; a killed test run or demo left orphaned coturn processes behind. util-linux's
    ``setpriv`` sets the death signal and execs coturn: no Python runs in the forked child. (A
    ``preexec_fn`` did, and in a process whose other threads hold locks at the fork, aiortc's
    decoders or a thread pool, the child could hang before its exec, and the start with it.)
    """
    setpriv = shutil.which("setpriv")
    return command if setpriv is None else [setpriv, "--pdeathsig", "TERM", *command]


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


def _free_port(*, besides: int | None = None) -> int:
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind(("127.0.0.1", 0))
            port: int = udp.getsockname()[1]
        if port != besides and _port_is_free(port):
            return port
    raise TurnServerError("no free UDP+TCP port on 127.0.0.1")


@dataclass(frozen=True)
class TlsFiles:
    ca_file: Path  # the CA's certificate: what clients trust
    cert_file: Path  # coturn's certificate for 127.0.0.1 and localhost
    key_file: Path  # coturn's private key (0600)


_TLS_VALIDITY = datetime.timedelta(days=30)  # a long demo; the CA dies with the server anyway


def make_tls_files(directory: Path, *, ca_name: str = "telehealth development TURN CA") -> TlsFiles:
    """A throwaway CA and a server certificate it signs, for 127.0.0.1 and localhost.

    Only the CA's certificate is kept: its key signs once and is forgotten, so nothing else can
    be signed with it. EC P-256 keys: generated in milliseconds. Blocking: not on the event loop.
    ``ca_name`` is the CA's common name (the tests' TLS fronts make their own CAs with it too).
    """
    now = datetime.datetime.now(datetime.UTC)
    not_before, not_after = now - datetime.timedelta(minutes=5), now + _TLS_VALIDITY
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, ca_name)])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_subject)
        .issuer_name(ca_subject)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    server_key = ec.generate_private_key(ec.SECP256R1())
    server_cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_subject)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.IPv4Address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(server_key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    files = TlsFiles(directory / "ca.pem", directory / "server.pem", directory / "server.key")
    files.ca_file.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    files.cert_file.write_bytes(server_cert.public_bytes(serialization.Encoding.PEM))
    write_private(
        files.key_file,
        server_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )
    return files


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


def _config_value(field: str, value: str) -> str:
    """``value`` as one ``name=value`` line of coturn's configuration file can hold it."""
    if not value or any(c.isspace() or not c.isprintable() for c in value) or "#" in value:
        raise ValueError(f"{field}: must be non-empty printable text without spaces, line breaks or '#'")
    return value


class TurnServer:
    """coturn on 127.0.0.1 with a shared secret; an async context manager.

    ``urls`` is what an RTCIceServer needs; credentials come from
    ``turn_rest_credentials(server.secret, user_id, ttl)``. With ``tls=True``, ``tls_urls``
    holds the ``turns:`` URL and ``ca_file`` the certificate a client must trust for it.
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
        tls: bool = False,
        tls_port: int | None = None,
    ) -> None:
        if tls_port is not None and not tls:
            raise ValueError("tls_port: is only used with tls=True")
        if tls_port is not None and tls_port == port:
            raise ValueError("tls_port: must differ from port")
        self.realm = _config_value("realm", realm)
        self.secret = _config_value("secret", secret) if secret is not None else secrets.token_urlsafe(32)
        self.tls = tls
        self._requested_port = port
        self._requested_tls_port = tls_port
        self._tls_port: int | None = None
        # Kept across restart(): clients trusting the CA go on trusting the restarted server.
        self._tls_dir: tempfile.TemporaryDirectory[str] | None = None
        self._tls_files: TlsFiles | None = None
        self._relay_ports: tuple[int, int] | None = None
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
    def tls_port(self) -> int:
        if not self.tls:
            raise RuntimeError("TurnServer has no TLS listener: make it with tls=True")
        if self._tls_port is None:
            raise RuntimeError("TurnServer is not started")
        return self._tls_port

    @property
    def tls_urls(self) -> list[str]:
        """TURN over TLS (RFC 7065 ``turns:``), what a hospital's TURN server on 443 offers."""
        return [f"turns:127.0.0.1:{self.tls_port}?transport=tcp"]

    @property
    def ca_file(self) -> Path:
        """The PEM certificate of the CA that signed the TLS listener's certificate."""
        if not self.tls:
            raise RuntimeError("TurnServer has no TLS listener: make it with tls=True")
        if self._tls_files is None:
            raise RuntimeError("TurnServer is not started")
        return self._tls_files.ca_file

    @property
    def relay_ports(self) -> tuple[int, int]:
        """The lowest and highest port of coturn's relay addresses (picked at random per start)."""
        if self._relay_ports is None or not self.running:
            raise RuntimeError("TurnServer is not started")
        return self._relay_ports

    @property
    def config_path(self) -> Path | None:
        """coturn's configuration file while the server runs (0600: it holds the secret)."""
        return Path(self._workdir.name) / "turnserver.conf" if self._workdir is not None else None

    @property
    def log_path(self) -> Path | None:
        """coturn's log file while the server runs (it holds no secrets, only usernames)."""
        return Path(self._workdir.name) / "turnserver.log" if self._workdir is not None else None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.returncode is None

    def _options(self, port: int, workdir: Path) -> list[str]:
        """coturn's options as lines of its configuration file (``name`` or ``name=value``)."""
        options = [
            f"listening-port={port}",
            "listening-ip=127.0.0.1",
            "relay-ip=127.0.0.1",
            # Development only: lets two peers on this machine reach each other's relay
            # addresses on 127.0.0.1. A production TURN server must never allow this.
            "allow-loopback-peers",
            "no-multicast-peers",
            "use-auth-secret",
            f"static-auth-secret={self.secret}",
            f"realm={self.realm}",
            "fingerprint",
            "no-dtls",
            "no-cli",
            "no-rfc5780",
            "no-software-attribute",
            f"userdb={workdir / 'turndb'}",
            f"pidfile={workdir / 'turnserver.pid'}",
            f"log-file={workdir / 'turnserver.log'}",
            "simple-log",
            "no-stdout-log",
        ]
        if self._tls_files is None:
            return [*options, "no-tls"]
        return [
            *options,
            f"tls-listening-port={self.tls_port}",
            f"cert={self._tls_files.cert_file}",
            f"pkey={self._tls_files.key_file}",
            "no-tlsv1",
            "no-tlsv1_1",
        ]

    def _command(self, executable: str, config: Path) -> list[str]:
        min_port = random.randrange(49152, 65535 - _RELAY_WINDOW)
        self._relay_ports = (min_port, min_port + _RELAY_WINDOW - 1)
        return [
            executable,
            "-c",
            str(config),
            # Not secret: on the command line, ps shows which relay range each coturn owns.
            f"--min-port={self._relay_ports[0]}",
            f"--max-port={self._relay_ports[1]}",
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
        attempts = 1 if self._requested_port and (self._requested_tls_port or not self.tls) else 3
        for attempt in range(1, attempts + 1):
            try:
                port = self._requested_port or _free_port(besides=self._requested_tls_port)
                tls_port = (self._requested_tls_port or _free_port(besides=port)) if self.tls else None
                await self._start_once(executable, port, tls_port)
                break
            except TurnServerError:
                await self.stop()
                if attempt == attempts:
                    raise
            except BaseException:
                await self.stop()
                raise
        logger.info("turn_started port=%d tls_port=%s realm=%s", self.port, self._tls_port, self.realm)

    async def _start_once(self, executable: str, port: int, tls_port: int | None) -> None:
        # Checked first because another coturn on the port would answer our readiness probe.
        for wanted in (port, tls_port):
            if wanted is not None and not _port_is_free(wanted):
                raise TurnServerError(f"127.0.0.1:{wanted} is already in use")
        self._workdir = tempfile.TemporaryDirectory(prefix="telehealth-turn-")
        workdir = Path(self._workdir.name)
        self._tls_port = tls_port
        if tls_port is not None and self._tls_files is None:
            self._tls_dir = tempfile.TemporaryDirectory(prefix="telehealth-turn-tls-")
            self._tls_files = await asyncio.to_thread(make_tls_files, Path(self._tls_dir.name))
        config = workdir / "turnserver.conf"
        text = "\n".join(self._options(port, workdir)) + "\n"
        await asyncio.to_thread(write_private, config, text.encode())
        self._process = await asyncio.create_subprocess_exec(
            *_dying_with_parent(self._command(executable, config)),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
            start_new_session=True,  # a Ctrl-C in the terminal reaches us, not coturn
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
                    if self._tls_port is None or await self._accepts_tcp(self._tls_port):
                        return
                    # UDP is up, the TLS listener not yet: wait a little for it (or for an exit).
                    await asyncio.wait({exited}, timeout=min(0.05, max(0.0, deadline - loop.time())))
                    continue
                if self._port_in_use():
                    raise TurnServerError(f"127.0.0.1:{self.port} is already in use{self._log_tail()}")
        finally:
            if not exited.done():
                exited.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await exited

    @staticmethod
    async def _accepts_tcp(port: int) -> bool:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            return False
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return True

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
        await self._stop(keep_tls=False)

    async def _stop(self, *, keep_tls: bool) -> None:
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
            if self._tls_dir is not None and not keep_tls:
                self._tls_dir.cleanup()
                self._tls_dir, self._tls_files = None, None
            if process is not None:
                logger.info("turn_stopped port=%s", self._port)

    async def restart(self) -> None:
        """Stop coturn and start it again on the same port with the same secret (its allocations
        are gone: what a TURN server's restart does to the calls through it). A TLS listener
        comes back on its port with the same certificate."""
        port, tls_port = self.port, self._tls_port
        await self._stop(keep_tls=True)
        requested = self._requested_port, self._requested_tls_port
        self._requested_port, self._requested_tls_port = port, tls_port
        try:
            await self.start()
        finally:
            self._requested_port, self._requested_tls_port = requested

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
