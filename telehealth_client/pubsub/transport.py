"""The PubNub SDK's aiohttp transport, routed: through the HTTPS proxy and with the CA bundle.

PubNub SDK 10.8 facts: ``PubNubAsyncio(custom_request_handler=...)`` takes a handler class and
makes it with the PubNub instance; its ``AsyncAiohttpRequestHandler`` makes a ``TCPConnector`` with
the default TLS verification in its constructor and a ``ClientSession`` without a proxy on first
use, and every request goes through that session. So this handler keeps the SDK's request code
and gives its session the route's connector (``ssl=``) and proxy (``proxy=``, ``proxy_auth=``:
aiohttp 3.11's session defaults), made when the session is (on the event loop).

Public API: ``routed_handler(outbound, origin, tls) -> type`` (the class for
``custom_request_handler``).
"""

from __future__ import annotations

from typing import Any

import aiohttp
from pubnub.request_handlers.async_aiohttp import AsyncAiohttpRequestHandler

from telehealth_client.outbound import Outbound, host_of


def routed_handler(outbound: Outbound, origin: str, tls: bool) -> type[Any]:
    """A request handler class whose session reaches ``origin`` the way ``outbound`` says."""
    proxy = outbound.proxy_for(host_of(origin), tls=tls)

    class RoutedRequestHandler(AsyncAiohttpRequestHandler):  # type: ignore[misc]  # the SDK is untyped
        def __init__(self, pubnub: Any) -> None:
            # Not the SDK's constructor: its connector would verify with the system's CAs only.
            self.pubnub = pubnub
            self._connector: aiohttp.TCPConnector | None = None
            self._session: aiohttp.ClientSession | None = None

        async def create_session(self) -> None:
            if self._session:
                return
            self._connector = aiohttp.TCPConnector(ssl=outbound.verify)
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(connect=self.pubnub.config.connect_timeout),
                connector=self._connector,
                proxy=proxy.url if proxy is not None else None,
                proxy_auth=proxy.basic_auth() if proxy is not None else None,
            )

    return RoutedRequestHandler
