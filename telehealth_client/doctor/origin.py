"""Check 3: the PubNub origin is reachable, over TLS with a verified certificate when ``ssl`` is
on, and answers as PubNub does (preflight's ``time`` round trip, through the SDK).

The TCP connection and the TLS handshake come first, on their own, so that a refused connection,
a name that does not resolve and a certificate this machine does not trust are each told apart.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import ssl
import time
from urllib.parse import urlsplit

from telehealth_client.config import Settings
from telehealth_client.doctor.report import Result, failed, passed, warned
from telehealth_client.outbound import Outbound, Proxy
from telehealth_client.preflight import signaling_round_trip
from telehealth_client.tunnel import TunnelError, open_tunnel

NAME = "pubnub"


def host_and_port(origin: str, tls: bool) -> tuple[str, int]:
    """``host[:port]`` or ``[v6]:port`` (validated by the settings); the port PubNub's SDK uses."""
    parts = urlsplit(f"//{origin}")
    return parts.hostname or origin, parts.port or (443 if tls else 80)


async def handshake(
    host: str, port: int, context: ssl.SSLContext | None, within: float, proxy: Proxy | None = None
) -> str | None:
    """A TCP connection (through ``proxy``'s tunnel when given; with ``context`` a TLS handshake,
    the certificate verified for ``host``), closed at once; what went wrong, with the fix, or None."""
    try:
        async with asyncio.timeout(within):
            if proxy is None:
                _, writer = await asyncio.open_connection(
                    host, port, ssl=context, server_hostname=host if context else None
                )
            else:  # as the agent's PubNub traffic goes: TLS end to end inside the proxy's tunnel
                tunnel = await open_tunnel(proxy, host, port, within=within)
                _, writer = await asyncio.open_connection(
                    sock=tunnel, ssl=context, server_hostname=host if context else None
                )
    except TunnelError as exc:
        return f"{exc}: check https_proxy (and proxy_authorization), or no_proxy for {host}"
    except ssl.SSLCertVerificationError as exc:
        return (
            f"the TLS certificate of {host}:{port} is not trusted ({exc.verify_message}): a proxy that "
            "inspects TLS needs its CA in ca_bundle; otherwise check origin"
        )
    except ssl.SSLError as exc:
        return (
            f"the TLS handshake with {host}:{port} failed ({exc.reason or type(exc).__name__}): check origin"
        )
    except socket.gaierror:
        return f"cannot resolve {host}: check origin and this machine's DNS"
    except TimeoutError:
        return f"no answer from {host}:{port} within {within:g} s: check origin and the firewall"
    except OSError as exc:
        # asyncio's strerror names the address again: the errno's own words say it plainly.
        why = os.strerror(exc.errno) if exc.errno else type(exc).__name__
        return (
            f"cannot connect to {host}:{port} ({why}): check origin "
            f"and that the firewall lets TCP port {port} out"
        )
    writer.close()
    with contextlib.suppress(OSError):  # how it ends does not matter: it was made
        await writer.wait_closed()
    return None


async def check_origin(settings: Settings, context: ssl.SSLContext | None = None) -> Result:
    """Check 3. ``context``: the TLS trust to verify with (default: the system's)."""
    host, port = host_and_port(settings.origin, settings.ssl)
    outbound = Outbound.from_settings(settings)  # the agent's route: its proxy and CA bundle
    await outbound.prepare()
    tls = (context or outbound.ssl_context or ssl.create_default_context()) if settings.ssl else None
    within = settings.request_timeout_seconds
    problem = await handshake(host, port, tls, within, outbound.proxy_for(host, tls=settings.ssl))
    if problem is not None:
        return failed(NAME, problem)
    started = time.monotonic()
    answered = await signaling_round_trip(settings)
    if not answered.ok:
        return failed(NAME, f"{host}:{port} takes connections but {answered.reason}: check origin")
    took = f"PubNub answered in {(time.monotonic() - started) * 1000:.0f} ms"
    if settings.ssl:
        return passed(NAME, f"{settings.origin}: TLS certificate verified, {took}")
    return warned(
        NAME,
        f"{settings.origin}: {took}, without TLS: ssl = false is a development setting (the local "
        "relay); a kiosk uses ssl = true",
    )
