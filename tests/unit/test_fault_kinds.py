"""Connection faults, exactly: every kind from the real aiohttp/OS exceptions wherever they sit in
the chain, the HTTP boundary, and when the reporter logs (mutants that survived test_bus_faults.py
reordered the checks, moved a boundary or miscounted and nothing noticed)."""

from __future__ import annotations

import json
import logging
import ssl
from itertools import islice
from types import SimpleNamespace
from typing import Any

import aiohttp
import pytest
from aiohttp.client_reqrep import ConnectionKey
from pubnub.enums import PNStatusCategory
from pubnub.models.consumer.common import PNStatus
from pubnub.models.consumer.pn_error_data import PNErrorData
from pubnub.pubnub_asyncio import PubNubAsyncioException

from telehealth_client.pubsub import faults
from telehealth_client.pubsub.faults import FaultReporter, classify, classify_exception

KEY = ConnectionKey("origin.example", 443, True, True, None, None, None)


def caused_by(cause: BaseException) -> Exception:
    try:
        raise RuntimeError("wrapper") from cause
    except RuntimeError as exc:
        return exc


def raised_while_handling(context: BaseException) -> Exception:
    """An error raised in an except block: the first one is its __context__, not its __cause__."""
    try:
        try:
            raise context
        except BaseException:
            raise KeyError("inner")  # noqa: B904 - the implicit context is the point
    except KeyError as exc:
        return exc


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (None, None),
        (
            aiohttp.ClientConnectorCertificateError(KEY, ssl.SSLCertVerificationError(1, "bad cert")),
            f"{faults.CERTIFICATE} (certificate verify failed)",
        ),
        (aiohttp.ClientSSLError(KEY, OSError(1, "tls")), faults.TLS),
        (ssl.SSLError(1, "handshake"), faults.TLS),
        (caused_by(ssl.SSLError(1, "handshake")), faults.TLS),
        (ConnectionRefusedError(111, "refused"), faults.CONNECTION_REFUSED),
        (aiohttp.ServerTimeoutError("read"), faults.TIMEOUT),
        (ConnectionResetError(104, "reset"), faults.DISCONNECTED),
        (aiohttp.ServerDisconnectedError(), faults.DISCONNECTED),
        (raised_while_handling(ConnectionResetError(104, "reset")), faults.DISCONNECTED),
        (caused_by(aiohttp.ClientConnectorError(KEY, OSError(113, "no route"))), None),
        (caused_by(caused_by(TimeoutError())), faults.TIMEOUT),
    ],
)
def test_every_kind_is_found_wherever_it_sits_in_the_chain(
    exc: BaseException | None, kind: str | None
) -> None:
    assert classify_exception(exc) == kind


def test_the_kinds_read_as_they_are_logged() -> None:
    assert (faults.CONNECTION_REFUSED, faults.DNS, faults.TLS, faults.TIMEOUT, faults.DISCONNECTED) == (
        "connection refused",
        "DNS lookup failed",
        "TLS handshake failed",
        "timeout",
        "connection closed by the server",
    )


def test_the_most_specific_kind_wins_over_the_os_error_inside() -> None:
    # A DNS failure wraps an OSError, a refused connection a ConnectionRefusedError: the
    # connector error itself is looked at before what it carries.
    dns = aiohttp.ClientConnectorDNSError(KEY, ConnectionRefusedError(111, "odd resolver"))
    assert classify_exception(dns) == f"{faults.DNS} for origin.example"
    refused = aiohttp.ClientConnectorError(KEY, ConnectionRefusedError(111, "refused"))
    assert classify_exception(caused_by(refused)) == faults.CONNECTION_REFUSED


def test_a_cause_chain_that_loops_ends() -> None:
    first, second = RuntimeError("a"), RuntimeError("b")
    first.__cause__, second.__cause__ = second, first
    third = RuntimeError("c")
    third.__cause__ = third
    # Each exception of a loop is looked at once. Taken from the walk itself first, so that a
    # walk that never ends fails here instead of hanging the classification below.
    assert list(islice(faults._causes(first), 5)) == [first, second]
    assert list(islice(faults._causes(third), 5)) == [third]
    assert classify_exception(first) is None
    assert classify_exception(third) is None


def sdk_error(exc: object = None, code: object = None, category: Any = None) -> Any:
    status = PNStatus()
    status.error = True
    status.status_code = code
    status.category = category or PNStatusCategory.PNUnknownCategory
    if exc is not None:
        status.error_data = PNErrorData("error", exc)
    return PubNubAsyncioException(result=None, status=status)


def test_an_envelope_of_another_shape_is_no_answer() -> None:
    # classify reads whatever the SDK hands over: an "exception" that is not one is no answer.
    odd = SimpleNamespace(status=SimpleNamespace(error_data=SimpleNamespace(exception="refused")))
    assert classify(odd) == "no answer"
    assert classify(SimpleNamespace(status=None)) == "no answer"


@pytest.mark.parametrize(
    ("envelope", "kind"),
    [
        (sdk_error(code=400), "HTTP 400"),
        (sdk_error(code=399), "no answer"),
        (sdk_error(code=200, exc=ConnectionResetError(104, "reset")), faults.DISCONNECTED),
        (sdk_error(code="503"), "no answer"),
        (sdk_error(code=503, category=PNStatusCategory.PNTimeoutCategory), "HTTP 503"),
        (sdk_error(TimeoutError()), faults.TIMEOUT),
        (sdk_error(json.JSONDecodeError("x", "", 0)), "undecodable answer (JSONDecodeError)"),
        (sdk_error(ValueError()), "undecodable answer (ValueError)"),
        (sdk_error(RuntimeError()), "RuntimeError"),
        (object(), "no answer"),
    ],
)
def test_error_envelopes_are_classified_http_first(envelope: Any, kind: str) -> None:
    assert classify(envelope) == kind


class Clock:
    def __init__(self) -> None:
        self.now = 500.0

    def __call__(self) -> float:
        return self.now


def lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.name == faults.log.name]


def test_the_reminder_comes_at_exactly_the_interval_default_a_minute(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger=faults.log.name)
    clock = Clock()
    reporter = FaultReporter("ps.example", clock=clock)
    reporter.failed("timeout")
    assert reporter.kind == "timeout"
    clock.now = 559.9
    reporter.failed("timeout")
    assert len(lines(caplog)) == 1
    clock.now = 560.0
    reporter.failed("timeout")
    assert lines(caplog)[1:] == [
        "bus connection fault continues origin=ps.example error=timeout for_seconds=60.0 failures=3"
    ]
    assert all(record.levelno == logging.WARNING for record in caplog.records)


def test_a_change_of_kind_restarts_the_interval(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger=faults.log.name)
    clock = Clock()
    reporter = FaultReporter("o", repeat_seconds=10.0, clock=clock)
    reporter.failed("timeout")
    clock.now += 9.0
    reporter.failed("HTTP 502")
    clock.now += 9.0  # 18 s into the fault but 9 s after the last line
    reporter.failed("HTTP 502")
    assert reporter.kind == "HTTP 502"
    assert lines(caplog) == [
        "bus connection fault started origin=o error=timeout",
        "bus connection fault continues origin=o error=HTTP 502 for_seconds=9.0 failures=2",
    ]


def test_after_a_fault_ends_the_next_one_starts_afresh(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger=faults.log.name)
    clock = Clock()
    reporter = FaultReporter("o", repeat_seconds=10.0, clock=clock)
    reporter.failed("timeout")
    reporter.failed("timeout")
    clock.now += 4.5
    reporter.succeeded()
    assert reporter.kind is None
    clock.now += 100.0
    reporter.failed("timeout")
    clock.now += 10.0
    reporter.failed("timeout")
    clock.now += 2.0
    reporter.succeeded()
    assert lines(caplog) == [
        "bus connection fault started origin=o error=timeout",
        "bus connection fault ended origin=o error=timeout after_seconds=4.5 failures=2",
        "bus connection fault started origin=o error=timeout",
        "bus connection fault continues origin=o error=timeout for_seconds=10.0 failures=2",
        "bus connection fault ended origin=o error=timeout after_seconds=12.0 failures=2",
    ]
