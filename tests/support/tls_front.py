"""TLS in front of the development stack's plain HTTP servers, with a CA made for the test.

``ThrowawayCa.make(directory)`` (blocking: run it in a thread) generates a throwaway CA and a server
certificate it signs for 127.0.0.1 and localhost, and writes the CA's certificate as ``ca_file``
(what ``ca_bundle`` names) and, for the tests of refused bundles, a file holding a private key
(``key_file``). ``TlsFront(target_port, ca)`` as ``async with`` listens with TLS on loopback and
pipes each connection's plain bytes to ``127.0.0.1:target_port`` (the relay, the clinic
stand-in): ``origin`` (``127.0.0.1:port``) and ``url`` (``https://...``). It is real TLS, a real
certificate chain: a client that does not trust the CA fails its handshake.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from telehealth_devstack.network import splice
from tests.support.loopback_server import LoopbackServer


@dataclass(frozen=True)
class ThrowawayCa:
    ca_file: Path  # the CA's certificate (PEM): the ca_bundle a client is given
    cert_file: Path  # the server's certificate, for 127.0.0.1 and localhost
    key_file: Path  # the server's private key

    @classmethod
    def make(cls, directory: Path, *, name: str = "telehealth test CA") -> ThrowawayCa:
        directory.mkdir(parents=True, exist_ok=True)
        now = datetime.datetime.now(datetime.UTC)
        valid = (now - datetime.timedelta(minutes=5), now + datetime.timedelta(days=1))
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        ca_cert = (
            _builder(ca_name, ca_name, ca_key.public_key(), valid)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
        names = [x509.IPAddress(ipaddress.IPv4Address("127.0.0.1")), x509.DNSName("localhost")]
        cert = (
            _builder(subject, ca_name, key.public_key(), valid)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
            )
            .sign(ca_key, hashes.SHA256())
        )
        made = cls(directory / "ca.pem", directory / "server.pem", directory / "server.key")
        made.ca_file.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
        made.cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        made.key_file.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        made.key_file.chmod(0o600)
        return made

    def server_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert_file, self.key_file)
        return context


def _builder(
    subject: x509.Name,
    issuer: x509.Name,
    public_key: ec.EllipticCurvePublicKey,
    valid: tuple[datetime.datetime, datetime.datetime],
) -> x509.CertificateBuilder:
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(valid[0])
        .not_valid_after(valid[1])
    )


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
