"""``bus handler failed`` names the reason: our own exceptions' reason text, never a foreign message."""

from __future__ import annotations

from telehealth_client.consultation.session import SessionError
from telehealth_client.logs import exception_reason
from telehealth_client.pubsub.bus import BusError


def test_our_own_reasons_are_named() -> None:
    error = BusError("subscribe", "channels: 101 channels exceed the limit", retryable=False)
    assert exception_reason(error) == "subscribe: channels: 101 channels exceed the limit"
    assert exception_reason(SessionError("not-connected", "no answer")) == "not-connected: no answer"


def test_a_foreign_message_is_never_repeated() -> None:
    assert exception_reason(ValueError("patient Jane Doe")) == "-"
