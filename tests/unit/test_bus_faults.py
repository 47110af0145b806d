"""Connection faults: classified from the real exceptions, logged at start, at an interval, at the end."""

from __future__ import annotations

import logging
import ssl
from typing import Any

import aiohttp
import pytest
from aiohttp.client_reqrep import ConnectionKey
from multidict import CIMultiDict, CIMultiDictProxy
from pubnub.enums import PNStatusCategory
from pubnub.models.consumer.common import PNStatus
from pubnub.models.consumer.pn_error_data import PNErrorData
from pubnub.pubnub_asyncio import PubNubAsyncioException
from yarl import URL

from telehealth_client.pubsub.faults import (
    FaultReporter,
    classify,
    classify_exception,
    credentials_refused,
    is_route_fault,
)

KEY = ConnectionKey("origin.example", 443, True, True, None, None, None)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def wrapped(cause: BaseException) -> Exception:
    """As the SDK hands it over: the transport error as the cause of another."""
    try:
        raise RuntimeError("wrapper") from cause
    except RuntimeError as exc:
        return exc


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (aiohttp.ClientConnectorError(KEY, ConnectionRefusedError(111, "refused")), "connection refused"),
        (
            aiohttp.ClientConnectorDNSError(KEY, OSError(-2, "Name or service not known")),
            "DNS lookup failed for origin.example",
        ),
        (aiohttp.ClientConnectorSSLError(KEY, ssl.SSLError(1, "handshake")), "TLS handshake failed"),
        (TimeoutError(), "timeout"),
        (aiohttp.ServerDisconnectedError(), "connection closed by the server"),
        (wrapped(ConnectionRefusedError(111, "refused")), "connection refused"),
        (RuntimeError("something else"), None),
    ],
)
def test_transport_errors_are_classified(exc: BaseException, kind: str | None) -> None:
    assert classify_exception(exc) == kind


def messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [record.getMessage() for record in caplog.records]


def test_a_fault_is_logged_at_start_at_the_interval_and_at_the_end(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="telehealth_client.pubsub.faults")
    clock = Clock()
    faults = FaultReporter("ps.example.com", repeat_seconds=60.0, clock=clock)
    faults.succeeded()
    assert messages(caplog) == []  # nothing to end
    for _ in range(10):  # ten failures within a minute: one line
        faults.failed("connection refused")
        clock.now += 5.0
    assert messages(caplog) == ["bus connection fault started origin=ps.example.com error=connection refused"]
    clock.now = 1061.0
    faults.failed("connection refused")
    faults.failed("connection refused")
    assert messages(caplog)[1:] == [
        "bus connection fault continues origin=ps.example.com error=connection refused"
        " for_seconds=61.0 failures=11"
    ]
    faults.failed("HTTP 503")  # a new kind is said at once
    assert messages(caplog)[2].endswith("error=HTTP 503 for_seconds=61.0 failures=13")
    clock.now = 1090.5
    faults.succeeded()
    faults.succeeded()
    assert messages(caplog)[3:] == [
        "bus connection fault ended origin=ps.example.com error=HTTP 503 after_seconds=90.5 failures=13"
    ]
    assert faults.kind is None


def sdk_error(exc: Exception | None = None, code: int | None = None, category: Any = None) -> Any:
    """An error envelope as the SDK builds it when a request fails."""
    status = PNStatus()
    status.error = True
    status.status_code = code
    status.category = category or PNStatusCategory.PNUnknownCategory
    if exc is not None:
        status.error_data = PNErrorData(str(exc), exc)
    return PubNubAsyncioException(result=None, status=status)


@pytest.mark.parametrize(
    ("envelope", "kind"),
    [
        (sdk_error(code=503), "HTTP 503"),
        (sdk_error(code=414), "HTTP 414"),
        (sdk_error(category=PNStatusCategory.PNTimeoutCategory), "timeout"),
        (sdk_error(wrapped(ConnectionRefusedError(111, "refused"))), "connection refused"),
        (sdk_error(RecursionError()), "undecodable answer (RecursionError)"),
        (sdk_error(KeyError("t")), "KeyError"),
        (sdk_error(), "no answer"),
    ],
)
def test_sdk_error_envelopes_are_classified(envelope: Any, kind: str) -> None:
    assert classify(envelope) == kind


@pytest.mark.parametrize(
    ("status", "kind", "slow"),
    [
        (407, "the proxy refused proxy_authorization (HTTP 407)", True),
        (403, "proxy refused the tunnel (HTTP 403)", False),
    ],
)
def test_a_proxy_refusing_the_credentials_is_told_apart_from_other_refusals(
    status: int, kind: str, slow: bool
) -> None:
    refused = aiohttp.ClientHttpProxyError(
        aiohttp.RequestInfo(URL("http://127.0.0.1:3128"), "CONNECT", CIMultiDictProxy(CIMultiDict())),
        (),
        status=status,
    )
    found = classify_exception(wrapped(refused))
    assert (found, credentials_refused(found), is_route_fault(kind)) == (kind, slow, True)
