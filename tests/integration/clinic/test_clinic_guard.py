"""What the clinic answers and logs when a request fails before or inside a handler.

Paths and queries can hold keys and tokens, and exception messages can hold request data: the
clinic answers such failures in JSON with CORS headers, as the relay does, and logs only the
exception's type and place.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from pathlib import Path

import pytest

from telehealth_devstack.clinic import Clinic
from tests.support import raw_http
from tests.support.clinic import ClinicApi, audit_event

pytestmark = pytest.mark.integration

WAIT = 10.0
MARKER = "SECRETMARKER"


async def raw_exchange(clinic: Clinic, request: bytes) -> tuple[int, dict[str, str], bytes]:
    return await raw_http.raw_exchange("127.0.0.1", clinic.port, request)


def logged_text(caplog: pytest.LogCaptureFixture) -> str:
    """Everything logged: formatted lines (tracebacks included) and each record's raw arguments."""
    return "\n".join([caplog.text] + [f"{r.msg} {r.args}" for r in caplog.records])


async def test_an_over_long_path_gets_json_with_cors_and_logs_no_path(
    offline_clinic: Clinic, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    target = f"/api/on-call/{MARKER * 1_700}?token=tok-{MARKER}"  # a 20 KB path
    request = f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode()

    status, headers, body = await raw_exchange(offline_clinic, request)

    assert status == 414
    assert headers["access-control-allow-origin"] == "*"
    assert headers["content-type"].startswith("application/json")
    answer = json.loads(body)
    assert answer["field"] == "request"
    assert MARKER not in answer["reason"]
    assert MARKER not in logged_text(caplog)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], "a client's mistake"


async def test_a_malformed_request_gets_json_with_cors_and_logs_no_path(
    offline_clinic: Clinic, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    request = f"GET /api/on-call/{MARKER} HTTP/1.1\r\nHost: 127.0.0.1\r\nBad Header\r\n\r\n".encode()

    status, headers, body = await raw_exchange(offline_clinic, request)

    assert status == 400
    assert headers["access-control-allow-origin"] == "*"
    assert json.loads(body)["field"] == "request"
    assert MARKER not in logged_text(caplog)


async def test_an_internal_error_is_logged_by_type_and_place_without_its_message(
    offline_clinic: Clinic, http: ClinicApi, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    # A real SQLite failure whose message carries a marker, as a driver's message can quote data.
    with sqlite3.connect(tmp_path / "clinic" / "audit.sqlite3") as db:
        db.execute(
            "CREATE TRIGGER refuse_inserts BEFORE INSERT ON audit_events "
            f"BEGIN SELECT RAISE(ABORT, 'disk says {MARKER}'); END"
        )
    caplog.set_level(logging.DEBUG)
    status, answer = await http.at(offline_clinic).post("/api/audit-events", audit_event())

    assert (status, answer["field"], answer["reason"]) == (500, "server", "internal error")
    (record,) = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert "IntegrityError at " in record.getMessage()
    assert record.exc_info is None
    assert MARKER not in logged_text(caplog)
