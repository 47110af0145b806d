"""TLS in front of the development stack's plain HTTP servers, with a CA made for the test.

``ThrowawayCa.make(directory)`` (blocking: run it in a thread) has the devstack's ``make_tls_files``
make a throwaway CA and a server certificate it signs for 127.0.0.1 and localhost, and writes the
CA's certificate as ``ca_file`` (what ``ca_bundle`` names) and, for the tests of refused bundles,
a file holding a private key (``key_file``). ``TlsFront(target_port, ca)`` as ``async with``
listens with TLS on loopback and pipes each connection's plain bytes to ``127.0.0.1:target_port``
(the relay, the clinic stand-in): ``origin`` (``127.0.0.1:port``) and ``url`` (``https://...``).
It is real TLS, a real certificate chain: a client that does not trust the CA fails its handshake.
"""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass
from pathlib import Path

from telehealth_devstack.network import splice
from telehealth_devstack.turn import make_tls_files
from tests.support.loopback_server import LoopbackServer


@dataclass(frozen=True)
class ThrowawayCa:
    ca_file: Path  # the CA's certificate (PEM): the ca_bundle a client is given
    cert_file: Path  # the server's certificate, for 127.0.0.1 and localhost
    key_file: Path  # the server's private key

    @classmethod
    def make(cls, directory: Path, *, name: str = "telehealth test CA") -> ThrowawayCa:
        directory.mkdir(parents=True, exist_ok=True)
        files = make_tls_files(directory, ca_name=name)
        return cls(files.ca_file, files.cert_file, files.key_file)

    def server_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert_file, self.key_file)
        return context


class TlsFront(LoopbackServer):
    def __init__(self, target_port: int, ca: ThrowawayCa) -> None:
        super().__init__()
        self._target_port = target_port
        self._ca = ca

    @property
    def origin(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"https://{self.origin}"

    async def _ssl_context(self) -> ssl.SSLContext:
        return await asyncio.to_thread(self._ca.server_context)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", self._target_port)
        with self._held(upstream_writer):
            await splice((reader, writer), (upstream_reader, upstream_writer))
