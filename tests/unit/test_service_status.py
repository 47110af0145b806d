"""service_status: the one status line (systemd's STATUS=) from what the agent waits for, its
consultations' states, their calls' status and the PubNub connection."""

from __future__ import annotations

from telehealth_client import events
from telehealth_client.pubsub.bus import ConnectionStatus, StatusChange
from telehealth_client.service_status import ServiceStatus

ORIGIN = "ps.pndsn.com"


def test_an_idle_kiosk_and_a_cart_with_nothing_held() -> None:
    status = ServiceStatus(ORIGIN)
    assert status.line([], "idle", idle=True) == "idle"
    assert status.line([], "connected", idle=False) == "pub/sub connected"


def test_a_consultation_its_call_and_pubsub() -> None:
    status = ServiceStatus(ORIGIN)
    held = [("consultation.dr-1.pat-1", "in-progress")]
    assert (
        status.line(held, "connected", idle=False) == "consultation in-progress, call none, pub/sub connected"
    )
    assert status.observe(events.CallStatusChanged("consultation.dr-1.pat-1", "live"))
    assert (
        status.line(held, "connected", idle=False) == "consultation in-progress, call live, pub/sub connected"
    )
    closed = events.SessionClosed("consultation.dr-1.pat-1", "completed")
    assert status.observe(closed)
    assert "call none" in status.line(held, "connected", idle=False)
    assert not status.observe(events.QueueUpdated("consultation.dr-1.pat-1", 1, 5))


def test_several_consultations_are_counted_and_the_call_under_way_shown() -> None:
    status = ServiceStatus(ORIGIN)
    status.observe(events.CallStatusChanged("c-1", "ended"))
    status.observe(events.CallStatusChanged("c-2", "recovering"))
    held = [("c-1", "wrapping-up"), ("c-2", "in-progress"), ("c-3", "waiting")]
    assert status.line(held, "connected", idle=False) == (
        "consultations 3 (1 in-progress, 1 waiting, 1 wrapping-up), call recovering, pub/sub connected"
    )


def test_what_it_waits_for_comes_first_and_goes_once_connected() -> None:
    status = ServiceStatus(ORIGIN)
    status.starting("starting the provider's endpoint")
    assert status.line([], "connecting", idle=False) == "starting the provider's endpoint, pub/sub connecting"
    failed = StatusChange(
        ConnectionStatus.RECONNECTING, reason="connection refused", failures=4, retry_in=2.14
    )
    status.bus_attempt(failed)
    assert status.line([], "reconnecting", idle=False) == (
        f"waiting for PubNub origin {ORIGIN} (connection refused; attempt 4, next in 2.1 s), "
        "pub/sub reconnecting"
    )
    status.waiting("waiting for the clinic backend https://clinic (HTTP 503; attempt 1, next in 0.5 s)")
    assert status.line([], "reconnecting", idle=False).startswith("waiting for the clinic backend")
    status.waiting(None)
    status.bus_changed(StatusChange(ConnectionStatus.CONNECTED))
    assert status.line([], "connected", idle=False) == "starting the provider's endpoint, pub/sub connected"
    status.starting(None)
    assert status.line([], "connected", idle=False) == "pub/sub connected"
    denied = StatusChange(ConnectionStatus.ACCESS_DENIED, reason="forbidden", failures=1, retry_in=0.5)
    status.bus_attempt(denied)
    assert status.line([], "access-denied", idle=False).startswith(
        "PubNub refused this agent's token (attempt 1"
    )
