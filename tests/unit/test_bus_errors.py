"""What a failed bus request tells its caller: the error's text, whether to retry, the HTTP status.

The envelopes are the SDK's own error objects (PNStatus in a PubNubAsyncioException), built as the
SDK builds them when a request fails; ``_failure`` is the one place they become BusErrors.
"""

from __future__ import annotations

from typing import Any

import pytest
from pubnub.enums import PNStatusCategory
from pubnub.models.consumer.common import PNStatus
from pubnub.pubnub_asyncio import PubNubAsyncioException

from telehealth_client.pubsub.bus import AccessDeniedError, BusError
from telehealth_client.pubsub.pubnub_bus import _failure


def sdk_error(code: int | None = None, category: Any = PNStatusCategory.PNUnknownCategory) -> Any:
    status = PNStatus()
    status.error = True
    status.status_code = code
    status.category = category
    return PubNubAsyncioException(result=None, status=status)


def test_a_bus_error_names_the_operation_the_reason_and_the_http_status() -> None:
    error = BusError("publish", "request refused", status_code=400, retryable=False)
    assert str(error) == "publish: request refused (HTTP 400)"
    assert (error.operation, error.reason, error.status_code, error.retryable) == (
        "publish",
        "request refused",
        400,
        False,
    )


def test_a_bus_error_without_a_status_has_no_http_part() -> None:
    error = BusError("subscribe", "the bus is closed", retryable=True)
    assert str(error) == "subscribe: the bus is closed"
    assert error.status_code is None
    assert error.retryable is True


def test_access_denied_is_a_final_403_naming_the_operation() -> None:
    error = AccessDeniedError("history")
    assert isinstance(error, BusError)
    assert str(error) == "history: access denied by Access Manager (HTTP 403)"
    assert (error.operation, error.reason, error.status_code, error.retryable) == (
        "history",
        "access denied by Access Manager",
        403,
        False,
    )


@pytest.mark.parametrize(
    "envelope",
    [
        sdk_error(403),
        sdk_error(403, PNStatusCategory.PNBadRequestCategory),
        sdk_error(None, PNStatusCategory.PNAccessDeniedCategory),
    ],
)
def test_a_403_or_an_access_denied_category_is_access_denied(envelope: Any) -> None:
    error = _failure("get user metadata", envelope)
    assert isinstance(error, AccessDeniedError)
    assert str(error) == "get user metadata: access denied by Access Manager (HTTP 403)"


@pytest.mark.parametrize("code", [400, 404, 414, 499])
def test_other_client_errors_are_refusals_not_worth_retrying(code: int) -> None:
    error = _failure("publish", sdk_error(code))
    assert type(error) is BusError
    assert str(error) == f"publish: request refused (HTTP {code})"
    assert (error.status_code, error.retryable) == (code, False)


@pytest.mark.parametrize("code", [408, 429, 500, 503])
def test_a_timeout_an_overload_and_server_errors_are_retryable(code: int) -> None:
    error = _failure("publish", sdk_error(code))
    assert type(error) is BusError
    assert str(error) == f"publish: network or server error (HTTP {code})"
    assert (error.status_code, error.retryable) == (code, True)


def test_a_request_that_timed_out_says_so() -> None:
    error = _failure("history", sdk_error(None, PNStatusCategory.PNTimeoutCategory))
    assert str(error) == "history: timed out"
    assert (error.status_code, error.retryable) == (None, True)


def test_no_answer_at_all_is_a_retryable_network_error() -> None:
    error = _failure("subscribe", sdk_error())
    assert str(error) == "subscribe: network or server error"
    assert (error.status_code, error.retryable) == (None, True)
