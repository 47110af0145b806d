"""How the agent's outbound connections leave the machine: the HTTPS proxy and the CA bundle.

Hospital networks often let nothing out but an HTTP proxy, and often inspect TLS with a CA of
their own. ``Outbound`` is that route, read once from the settings (``https_proxy``,
``proxy_authorization``, ``no_proxy``, ``ca_bundle``) and handed to every part that connects out:
the PubNub bus (``pubsub/transport.py``), the clinic backend's client, and TURN over TCP or TLS
in the media child (``media/ice.py``, through ``TurnConfig.outbound``).

The rules, the same for each:
- Only TLS connections use the proxy, as a ``CONNECT`` tunnel with TLS end to end inside it (what
  ``HTTPS_PROXY`` means to curl); plain ``http://`` (the development stack) goes direct. TURN over
  TCP is tunnelled too; TURN over UDP cannot be (an HTTP proxy carries TCP only).
- A host in ``no_proxy`` (exactly, or under a ``.domain`` suffix) is reached directly.
- ``ca_bundle``'s certificates are trusted besides the system's, never instead of them.
- The standard ``HTTPS_PROXY``/``NO_PROXY`` variables are not read: under systemd the unit's
  environment is empty anyway, and a variable inherited from a technician's shell must not send
  patient traffic another way than the settings (and ``telehealth-agent config``) say.

Public API: ``Outbound.from_settings(settings)``, ``Outbound(proxy, no_proxy, ca_bundle)``;
``proxy_for(host, tls=True)``, ``ssl_context`` (None without a bundle: the system's CAs),
``verify`` (for aiohttp's ``ssl=``), ``await prepare()``, ``direct``; ``Proxy(host, port, authorization)``
(``address``, ``url``, ``headers``, ``authorization_header()``); the settings' checks ``parse_proxy_url``,
``parse_no_proxy``, ``check_proxy_authorization``, ``check_ca_bundle``; ``host_of(origin)``;
``certificate_problem(exc)`` (OpenSSL's reason for an untrusted certificate), ``PROXY_REFUSED``,
``proxy_refusal(status)``, ``PROXY_CREDENTIALS_REFUSED``, ``PROXY_REFUSED_RETRY_SECONDS``.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import ipaddress
import os
import re
import ssl
import stat
import warnings
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Final, Protocol
from urllib.parse import urlsplit

from pydantic import SecretStr

# Far more than any real bundle (the whole Mozilla store is ~220 KB): a bigger file is the wrong one.
MAX_CA_BUNDLE_BYTES: Final = 4 * 1024 * 1024
_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_HOST_NAME = re.compile(rf"{_LABEL}(?:\.{_LABEL})*\.?")


class RouteSettings(Protocol):
    """What ``Outbound.from_settings`` reads of ``config.Settings`` (which imports this module)."""

    @property
    def https_proxy(self) -> str | None: ...
    @property
    def proxy_authorization(self) -> SecretStr | None: ...
    @property
    def no_proxy(self) -> list[str]: ...
    @property
    def ca_bundle(self) -> Path | None: ...


@dataclass(frozen=True)
class Proxy:
    """An HTTP proxy that opens ``CONNECT`` tunnels; ``authorization`` is ``user:password`` (Basic)."""

    host: str
    port: int
    authorization: str | None = field(default=None, repr=False)  # a secret

    @property
    def address(self) -> str:
        """``host:port`` as logs and errors name it (an IPv6 address in brackets)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.address}"

    @property
    def headers(self) -> dict[str, str] | None:
        """aiohttp's ``proxy_headers=`` for a request: the credentials, or None without any."""
        header = self.authorization_header()
        return {"Proxy-Authorization": header} if header is not None else None

    def authorization_header(self) -> str | None:
        """The ``Proxy-Authorization`` header's value (Basic, UTF-8), or None without credentials."""
        if self.authorization is None:
            return None
        return "Basic " + base64.b64encode(self.authorization.encode("utf-8")).decode("ascii")


@dataclass(frozen=True)
class Outbound:
    """The route of every outbound connection (see the module's docstring)."""

    proxy: Proxy | None = None
    no_proxy: tuple[str, ...] = ()
    ca_bundle: Path | None = None

    @classmethod
    def from_settings(cls, settings: RouteSettings) -> Outbound:
        proxy = None
        if settings.https_proxy is not None:
            host, port = parse_proxy_url(settings.https_proxy)
            secret = settings.proxy_authorization
            proxy = Proxy(host, port, secret.get_secret_value() if secret is not None else None)
        return cls(proxy, tuple(settings.no_proxy), settings.ca_bundle)

    @property
    def direct(self) -> bool:
        """Nothing to change: no proxy and the system's CAs only."""
        return self.proxy is None and self.ca_bundle is None

    def proxy_for(self, host: str, *, tls: bool = True) -> Proxy | None:
        """The proxy a connection to ``host`` goes through; None: directly."""
        if self.proxy is None or not tls:
            return None
        name = host.strip("[]").rstrip(".").lower()
        for entry in self.no_proxy:
            if name == entry.lstrip(".") or (entry.startswith(".") and name.endswith(entry)):
                return None
        return self.proxy

    @cached_property
    def ssl_context(self) -> ssl.SSLContext | None:
        """The system's CAs and the bundle's, or None without a bundle (each library's default:
        the system's). Blocking (reads the system's CA store): ``await prepare()`` first on a loop."""
        if self.ca_bundle is None:
            return None
        context = ssl.create_default_context()
        context.load_verify_locations(cafile=str(self.ca_bundle))
        return context

    @property
    def verify(self) -> ssl.SSLContext | bool:
        """aiohttp's ``ssl=``: the context with the bundle, or True (verify with the defaults)."""
        return self.ssl_context if self.ssl_context is not None else True

    async def prepare(self) -> None:
        """Build the SSL context in a thread, so that no connection builds it on the event loop.
        ssl.SSLError (or OSError) when the bundle cannot be loaded any more."""
        await asyncio.to_thread(lambda: self.ssl_context)


# What a proxy's refusal to open a tunnel is called, in the bus's faults and the clinic's errors.
PROXY_REFUSED: Final = "proxy refused the tunnel"
# A 407: the proxy_authorization setting is wrong or missing. Retrying soon cannot help, and each
# retry sends the password again: a directory-backed proxy may lock the hospital account.
PROXY_CREDENTIALS_REFUSED: Final = "the proxy refused proxy_authorization (HTTP 407)"
# How far apart a refused credential is tried again (as the clinic's refused device credential).
PROXY_REFUSED_RETRY_SECONDS: Final = 60.0


def proxy_refusal(status: int) -> str:
    """A proxy's answer to CONNECT other than 200, in words: a 407 names proxy_authorization."""
    return PROXY_CREDENTIALS_REFUSED if status == 407 else f"{PROXY_REFUSED} (HTTP {status})"


def certificate_problem(exc: BaseException) -> str | None:
    """OpenSSL's reason (``unable to get local issuer certificate``, ``certificate has expired``)
    when ``exc`` is a failed certificate verification (aiohttp's wraps it as ``certificate_error``);
    None for any other error."""
    inner = getattr(exc, "certificate_error", None)
    if isinstance(inner, BaseException):
        exc = inner
    if isinstance(exc, ssl.SSLCertVerificationError):
        # Set by OpenSSL's verification; one made by hand has none.
        return str(getattr(exc, "verify_message", None) or "certificate verify failed")
    return None


def host_of(origin: str) -> str:
    """The host of ``host``, ``host:port`` or ``[ipv6]:port``."""
    if origin.startswith("["):
        return origin[1:].partition("]")[0]
    return origin.partition(":")[0]


# -- the settings' checks (ValueError with the reason, never a secret) -------------------------------


def parse_proxy_url(value: str) -> tuple[str, int]:
    """(host, port) of ``http://host:port``."""
    text = value.strip()
    scheme, _, rest = text.partition("://")
    if not rest or scheme.lower() != "http":
        raise ValueError(
            "must be http://host:port: an HTTP proxy that opens CONNECT tunnels (TLS to the proxy"
            " itself, https://, is not supported)"
        )
    if "@" in rest.partition("/")[0]:
        raise ValueError(
            "must not hold credentials: `telehealth-agent config` and the logs show this URL;"
            " give them as the secret proxy_authorization (user:password)"
        )
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        raise ValueError("has a port that is not a number from 1 to 65535") from None
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError("must be http://host:port, without a path or query")
    host = parts.hostname
    if not host or any(char.isspace() for char in host):
        raise ValueError("has no host")
    if port is None or not 1 <= port <= 65535:
        raise ValueError("must name the proxy's port: http://host:port (3128 and 8080 are usual)")
    return host, port


def parse_no_proxy(value: object) -> list[str]:
    """``no_proxy`` as a list: a TOML array, or one string of names separated by commas or spaces.
    Each a host name, an IP address or a ``.domain`` suffix (``*.domain`` is read as one)."""
    if isinstance(value, str):
        items: list[object] = [item for item in re.split(r"[,\s]+", value) if item]
    elif isinstance(value, list | tuple):
        items = list(value)
    else:
        raise ValueError("must be a list of host names, or one string of them separated by commas")
    hosts = []
    for number, item in enumerate(items, start=1):
        if not isinstance(item, str):
            raise ValueError(f"item {number} must be a string")
        name = item.strip().lower()
        if name.startswith("*."):
            name = name[1:]
        if name in ("", "*", "."):
            raise ValueError(
                f"item {number} ({item!r}) would bypass the proxy for every host: unset https_proxy instead"
            )
        if not _is_host(name.lstrip(".")) or (name.startswith(".") and _is_ip(name[1:])):
            raise ValueError(
                f"item {number} ({item!r}) is not a host name, an IP address or a .domain suffix"
            )
        hosts.append(name)
    return hosts


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        return False
    return True


def _is_host(text: str) -> bool:
    return _is_ip(text) or (len(text) <= 253 and _HOST_NAME.fullmatch(text) is not None)


def check_proxy_authorization(value: str) -> None:
    """``user:password``, the proxy's Basic credentials (the value is never repeated)."""
    user, colon, _ = value.partition(":")
    if not colon or not user:
        raise ValueError("must be user:password (the proxy's Basic credentials)")


def check_ca_bundle(path: Path) -> None:
    """A PEM file of CA certificates that TLS can load: ValueError says why not.

    Judged by ``stat`` first, so that a FIFO or a device never blocks the load.
    """
    try:
        info = os.stat(path)
    except OSError as exc:
        raise ValueError(f"{path}: {exc.strerror or exc}") from None
    if not stat.S_ISREG(info.st_mode):
        raise ValueError(f"{path} is not a regular file")
    if info.st_size > MAX_CA_BUNDLE_BYTES:
        raise ValueError(f"{path} is larger than {MAX_CA_BUNDLE_BYTES // (1024 * 1024)} MiB: not a CA bundle")
    try:
        data = path.read_bytes()[: MAX_CA_BUNDLE_BYTES + 1]
    except OSError as exc:
        raise ValueError(f"{path}: cannot be read: {exc.strerror or exc}") from None
    if b"PRIVATE KEY-----" in data:
        raise ValueError(f"{path} holds a private key: give the CA certificates only")
    from cryptography import x509

    try:
        with warnings.catch_warnings():  # a system store may hold old certificates cryptography frowns at
            warnings.simplefilter("ignore")
            certificates = x509.load_pem_x509_certificates(data)
    except ValueError:
        raise ValueError(f"{path} holds no readable PEM certificate (-----BEGIN CERTIFICATE-----)") from None
    now = datetime.datetime.now(datetime.UTC)
    if all(certificate.not_valid_after_utc < now for certificate in certificates):
        newest = max(certificate.not_valid_after_utc for certificate in certificates)
        raise ValueError(f"{path}: every certificate in it has expired (the last on {newest:%Y-%m-%d})")
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cadata=data.decode("ascii"))
    except (ssl.SSLError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path} cannot be used by TLS ({type(exc).__name__})") from None
