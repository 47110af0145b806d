"""The PubNub SDK's aiohttp transport, routed: through the HTTPS proxy and with the CA bundle.

PubNub SDK 10.8 facts: ``PubNubAsyncio(custom_request_handler=...)`` takes a handler class and
makes it with the PubNub instance; its ``AsyncAiohttpRequestHandler`` makes a ``TCPConnector`` with
the default TLS verification in its constructor and a ``ClientSession`` without a proxy on first
use, and every request goes through that session's ``request``. So this handler keeps the SDK's
request code and gives it a session with the route's connector (``ssl=``) and proxy (``proxy=``,
aiohttp 3.11's session default), made when the session is (on the event loop). aiohttp has no
session-wide proxy credentials but the deprecated ``proxy_auth``: with credentials, each request
gets them as ``proxy_headers`` (``_ProxyCredentials``), sent to the proxy only.

Public API: ``routed_handler(outbound, origin, tls) -> type`` (the class for
``custom_request_handler``).
"""

from __future__ import annotations

from typing import Any

import aiohttp
from pubnub.request_handlers.async_aiohttp import AsyncAiohttpRequestHandler

from telehealth_client.outbound import Outbound, host_of


class _ProxyCredentials:
    """The session as the SDK uses it (``request``, ``close``), each request carrying the proxy's
    credentials in ``proxy_headers``."""

    def __init__(self, session: aiohttp.ClientSession, headers: dict[str, str]) -> None:
        self._session = session
        self._headers = headers

    def request(self, method: str, url: Any, **options: Any) -> Any:
        return self._session.request(method, url, proxy_headers=self._headers, **options)

    @property
    def closed(self) -> bool:
        return self._session.closed

    async def close(self) -> None:
        await self._session.close()


def routed_handler(outbound: Outbound, origin: str, tls: bool) -> type[Any]:
    """A request handler class whose session reaches ``origin`` the way ``outbound`` says."""
    proxy = outbound.proxy_for(host_of(origin), tls=tls)

    class RoutedRequestHandler(AsyncAiohttpRequestHandler):  # type: ignore[misc]  # the SDK is untyped
        def __init__(self, pubnub: Any) -> None:
            # Not the SDK's constructor: its connector would verify with the system's CAs only.
            self.pubnub = pubnub
            self._connector: aiohttp.TCPConnector | None = None
            self._session: aiohttp.ClientSession | _ProxyCredentials | None = None

        async def create_session(self) -> None:
            if self._session:
                return
            self._connector = aiohttp.TCPConnector(ssl=outbound.verify)
            session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(connect=self.pubnub.config.connect_timeout),
                connector=self._connector,
                proxy=proxy.url if proxy is not None else None,
            )
            headers = proxy.headers if proxy is not None else None
            self._session = session if headers is None else _ProxyCredentials(session, headers)

    return RoutedRequestHandler
