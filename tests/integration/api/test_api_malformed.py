"""Malformed HTTP on a real agent's API: each gets its JSON 400, and no log line (with its
exception text) holds the bearer token or any other byte of the request."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from tests.support.api import RunningAgent
from tests.support.logs import LogLines, attached
from tests.support.raw_http import raw_exchange

pytestmark = pytest.mark.integration


class FormattedLines(LogLines):
    """Each record as a log file gets it: the message and any exception's text and traceback."""

    def emit(self, record: logging.LogRecord) -> None:
        self.recorder.add(logging.Formatter("%(name)s %(levelname)s %(message)s").format(record))


@pytest.fixture
def every_log_line() -> Iterator[FormattedLines]:
    # aiohttp logs under "aiohttp.server", outside the product's logger: watch the root.
    with attached(FormattedLines(), "aiohttp"), attached(FormattedLines(), "", on="") as lines:
        yield lines


HEAD = b"GET /v1/status HTTP/1.1\r\nHost: x\r\n"


def malformed(token: str) -> dict[str, bytes]:
    secret = token.encode()
    return {
        "colon missing": HEAD + b"Authorization Bearer " + secret + b"\r\n\r\n",
        "header line too long": HEAD + secret + b": " + b"a" * 8200 + b"\r\n\r\n",
        "bare CR": HEAD + b"Authorization: Bearer " + secret + b"\rX: y\r\n\r\n",
        "bad chunk size": b"POST /v1/chat HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
        + secret
        + b"\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\nzz"
        + secret
        + b"\r\n{}\r\n0\r\n\r\n",
        "bad version": b"GET /v1/status?x=" + secret + b" HTTP/9.9\r\nHost: x\r\n\r\n",
    }


async def test_malformed_requests_get_a_json_400_and_never_log_the_token(
    kiosk: RunningAgent, every_log_line: FormattedLines
) -> None:
    host, _, port = kiosk.api.base.removeprefix("http://").rpartition(":")
    for case, request in malformed(kiosk.api.token).items():
        status, headers, body = await raw_exchange(host, int(port), request)
        assert 400 <= status < 500, (case, status, body)
        assert headers["content-type"].startswith("application/json"), (case, headers)
        assert b'"error"' in body and kiosk.api.token.encode() not in body, (case, body)
    await every_log_line.wait_line("local api refused a request status=")
    assert every_log_line.lines
    leaked = [line for line in every_log_line.lines if kiosk.api.token in line or "Bearer" in line]
    assert leaked == []
