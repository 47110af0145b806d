"""The metrics' folding of hub events (``api/metrics.py``) on a real, unstarted kiosk agent: each
counter moves on the event it counts, and two agents' registries stay apart."""

from __future__ import annotations

from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from telehealth_client import events
from telehealth_client.agent import Agent
from telehealth_client.api.metrics import AgentMetrics
from telehealth_client.config import load_settings
from telehealth_client.pubsub.bus import ConnectionStatus

CID = "consultation.dr-1.pat-1"


def agent(tmp_path: Path, user: str = "kiosk-1") -> Agent:
    settings = load_settings(
        environ={
            "TELEHEALTH_USER_ID": user,
            "TELEHEALTH_STATE_DIR": str(tmp_path),
            "TELEHEALTH_MEDIA": "false",
        }
    )
    return Agent(settings)


def samples(metrics: AgentMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = metrics.render().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(metrics: AgentMetrics, name: str, **labels: str) -> float:
    return samples(metrics).get((name, tuple(sorted(labels.items()))), 0.0)


def status(state: events.CallStatus) -> events.CallStatusChanged:
    return events.CallStatusChanged(CID, state)


def test_a_stall_is_a_rebuild_and_its_recovery_is_timed(tmp_path: Path) -> None:
    metrics = AgentMetrics(agent(tmp_path))
    for each in ("connecting", "live", "recovering", "live"):
        metrics.observe(status(each))  # type: ignore[arg-type]
    assert value(metrics, "telehealth_call_rebuilds_total") == 1
    assert value(metrics, "telehealth_call_stalls_total") == 1
    assert value(metrics, "telehealth_call_recovery_seconds_count") == 1
    assert value(metrics, "telehealth_calls", status="live") == 1
    assert value(metrics, "telehealth_call_status_changes_total", status="live") == 2
    # A media process that died is a rebuild, not a stall.
    metrics.observe(events.MediaFailed(CID, "media-process", "exited"))
    metrics.observe(status("recovering"))
    assert value(metrics, "telehealth_call_rebuilds_total") == 2
    assert value(metrics, "telehealth_call_stalls_total") == 1
    assert value(metrics, "telehealth_media_failures_total", source="media-process") == 1
    metrics.observe(events.SessionClosed(CID, "completed"))
    assert value(metrics, "telehealth_calls", status="recovering") == 0


def test_quality_tokens_bus_and_devices_are_folded(tmp_path: Path) -> None:
    metrics = AgentMetrics(agent(tmp_path))
    metrics.observe(events.CallQualityChanged(CID, 4, 80.0, 12.0, 2.5, 29.0, 640, 480, 900.0, 1200.0, 1500))
    assert value(metrics, "telehealth_call_quality_level") == 4
    assert value(metrics, "telehealth_call_rtt_seconds") == 0.08
    assert value(metrics, "telehealth_call_loss_ratio") == 0.025
    assert value(metrics, "telehealth_call_bits_per_second", direction="outbound") == 1_200_000
    metrics.observe(events.TokenRefreshed(60, "scheduled"))
    assert value(metrics, "telehealth_token_refreshes_total", reason="scheduled") == 1
    # Each consultation on a shared bus tells the same change: one reconnect.
    for each in (ConnectionStatus.CONNECTED, ConnectionStatus.RECONNECTING, ConnectionStatus.RECONNECTING):
        metrics.observe(events.BusStatusChanged(each))
    assert value(metrics, "telehealth_bus_reconnects_total") == 1
    assert value(metrics, "telehealth_pubsub_status", status="idle") == 1  # an unstarted kiosk: idle
    metrics.observe(events.DeviceCheckFinished("devchk-1", "devices", "warn", "ok", "warn", "skipped"))
    assert value(metrics, "telehealth_device_verdict", device="microphone", verdict="warn") == 1
    assert value(metrics, "telehealth_device_verdict", device="microphone", verdict="ok") == 0
    assert value(metrics, "telehealth_device_checks_total", check="devices", status="warn") == 1


def test_each_agent_has_its_own_registry(tmp_path: Path) -> None:
    first = AgentMetrics(agent(tmp_path / "a"))
    second = AgentMetrics(agent(tmp_path / "b", "kiosk-2"))
    first.observe(events.TokenRefreshed(60, "access-denied"))
    assert value(first, "telehealth_token_refreshes_total", reason="access-denied") == 1
    assert value(second, "telehealth_token_refreshes_total", reason="access-denied") == 0


async def test_a_scrape_counts_every_event_emitted_before_it(tmp_path: Path) -> None:
    kiosk = agent(tmp_path)
    metrics = AgentMetrics(kiosk)
    metrics.subscribe()  # following the hub, with no task to fold what it hears
    kiosk.hub.emit(events.AccessRenewing(1.0, False))
    assert value(metrics, "telehealth_access_renewing_total") == 1
    await metrics.aclose()
