"""``GET /metrics``: the agent's numbers in Prometheus text, through ``prometheus_client``.

``AgentMetrics`` is owned by the local API, one per agent with a registry of its own (never the
library's global default registry: two agents in one process keep their numbers apart). It
follows the event hub from the API's start and folds each event into counters, gauges and a
histogram; the backlogs (the outbox, the audit trail's waiting events) are read when scraped.

Labels are codes only (statuses, devices, verdicts, reasons from a fixed set): never a
consultation or user ID, which would name the patient to whoever reads the metrics. The calls'
numbers are the newest sample of any call this agent holds.

Public API: ``AgentMetrics(agent)``: ``start()`` (follows the hub), ``observe(event)``, ``render()``
(bytes, in ``CONTENT_TYPE``; it first counts what the hub told and was not counted yet, so a scrape
after an event always shows it), ``registry``, ``await aclose()``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Final, get_args

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from telehealth_client import events
from telehealth_client.api.views import pubsub_status
from telehealth_client.tasks import OwnedTasks

if TYPE_CHECKING:
    from telehealth_client.api.agent_view import AgentView

CONTENT_TYPE: Final = CONTENT_TYPE_LATEST
CALL_STATUSES: Final = get_args(events.CallStatus)
DEVICES: Final = ("camera", "microphone", "speaker")
VERDICTS: Final = ("ok", "warn", "fail", "skipped", "unknown")
# Recovering a call takes from a fraction of a second (a rebuild on a good path) to the better part
# of a minute (a network gone and back).
RECOVERY_BUCKETS: Final = (0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 8.0, 13.0, 21.0, 34.0, 60.0)
MEDIA_SOURCES: Final = frozenset({"media-process", "video", "audio", "speaker"})


class _Backlogs(Collector):
    """Read when scraped: what waits (the outbox's items, the audit trail's events) and the pub/sub
    connection the agent depends on now (``idle`` on a kiosk between patients)."""

    def __init__(self, agent: AgentView) -> None:
        self._agent = agent

    def collect(self) -> Iterator[Metric]:
        durable = self._agent.durable
        outbox = GaugeMetricFamily(
            "telehealth_outbox_pending", "Messages in the durable outbox waiting to be published"
        )
        audit = GaugeMetricFamily(
            "telehealth_audit_backlog",
            "Audit events recorded on this device and not yet delivered to the target",
            labels=["target"],
        )
        if durable is not None:
            outbox.add_metric([], len(durable.outbox.pending()))
            status = durable.trail.status()
            audit.add_metric(["sink"], status.awaiting_sink)
            audit.add_metric(["channel"], status.awaiting_channel)
        yield outbox
        yield audit
        pubsub = GaugeMetricFamily(
            "telehealth_pubsub_status",
            "The pub/sub connection this agent depends on now (1 for its status; idle: a kiosk between "
            "patients)",
            labels=["status"],
        )
        pubsub.add_metric([pubsub_status(self._agent)], 1)
        yield pubsub


class _Quality(Collector):
    """The newest call quality sample, once there is one (no numbers before any call)."""

    def __init__(self, metrics: AgentMetrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        sample = self._metrics.quality
        if sample is None:
            return
        values: list[tuple[str, str, float | None]] = [
            ("telehealth_call_quality_level",
             "The newest call quality level: 5 good, 1 poor, 0 nothing arriving", sample.level),
            ("telehealth_call_rtt_seconds", "The newest call round-trip time",
             None if sample.rtt_ms is None else sample.rtt_ms / 1000),
            ("telehealth_call_jitter_seconds", "The newest call jitter",
             None if sample.jitter_ms is None else sample.jitter_ms / 1000),
            ("telehealth_call_loss_ratio", "The newest call packet loss (0-1)", sample.loss_pct / 100),
            ("telehealth_call_frames_per_second", "The newest call's received video frame rate", sample.fps),
        ]  # fmt: skip
        for name, documentation, value in values:
            if value is not None:
                yield GaugeMetricFamily(name, documentation, value=value)
        bitrate = GaugeMetricFamily(
            "telehealth_call_bits_per_second", "The newest call's bitrate", labels=["direction"]
        )
        bitrate.add_metric(["inbound"], sample.inbound_kbps * 1000)
        bitrate.add_metric(["outbound"], sample.outbound_kbps * 1000)
        yield bitrate


class AgentMetrics:
    def __init__(self, agent: AgentView) -> None:
        self.registry = CollectorRegistry()
        registry = self.registry
        # Subscribed now (before the agent's parts start), like the event ring.
        self._subscription: events.EventSubscription | None = None
        self._hub = agent.hub
        self._tasks = OwnedTasks()
        self._calls: dict[str, str] = {}  # consultation ID -> its call's status (never exported)
        self._recovering_since: dict[str, float] = {}
        self._process_failed: set[str] = set()
        self._bus_status: str | None = None
        self.quality: events.CallQualityChanged | None = None  # the newest sample, of any call

        self.calls = Gauge(
            "telehealth_calls", "Calls this agent holds, by their status", ["status"], registry=registry
        )
        self.call_status_changes = Counter(
            "telehealth_call_status_changes", "Changes of a call's status, by the new status", ["status"],
            registry=registry,
        )  # fmt: skip
        self.rebuilds = Counter(
            "telehealth_call_rebuilds",
            "Rebuilds of a call's connection begun (its media stopped or its media process died)",
            registry=registry,
        )
        self.stalls = Counter(
            "telehealth_call_stalls", "Times a call's media stopped arriving (a stall)", registry=registry
        )
        self.recovery = Histogram(
            "telehealth_call_recovery_seconds",
            "From a rebuild's start until the far end's media arrived again",
            buckets=RECOVERY_BUCKETS,
            registry=registry,
        )
        self.media_failures = Counter(
            "telehealth_media_failures",
            "Parts of a call that failed, by source",
            ["source"],
            registry=registry,
        )
        self.device_verdict = Gauge(
            "telehealth_device_verdict",
            "The newest device check's verdict for each device (1 for the verdict it got)",
            ["device", "verdict"],
            registry=registry,
        )
        self.device_checks = Counter(
            "telehealth_device_checks", "Device checks and preflights run, by kind and status",
            ["check", "status"], registry=registry,
        )  # fmt: skip
        self.network_verdict = Gauge(
            "telehealth_network_verdict", "The newest preflight's network verdict (1 for the verdict it got)",
            ["verdict"], registry=registry,
        )  # fmt: skip
        self.token_refreshes = Counter(
            "telehealth_token_refreshes", "Access Manager tokens refreshed, by reason", ["reason"],
            registry=registry,
        )  # fmt: skip
        self.access_renewing = Counter(
            "telehealth_access_renewing", "Times the clinic could not be reached to renew access",
            registry=registry,
        )  # fmt: skip
        self.access_denied = Counter(
            "telehealth_access_denied", "Access Manager verdicts refusing access, by operation",
            ["operation"], registry=registry,
        )  # fmt: skip
        self.bus_reconnects = Counter(
            "telehealth_bus_reconnects", "Times the pub/sub connection was lost and reconnecting began",
            registry=registry,
        )  # fmt: skip
        self.events_missed = Counter(
            "telehealth_metrics_events_missed", "Hub events these metrics fell too far behind to count",
            registry=registry,
        )  # fmt: skip
        for status in CALL_STATUSES:
            self.calls.labels(status)
        registry.register(_Backlogs(agent))
        registry.register(_Quality(self))

    def subscribe(self) -> None:
        """Follow the hub from now (before ``start``, so nothing told in between is missed)."""
        if self._subscription is None:
            self._subscription = self._hub.subscribe(max_pending=1024)

    def start(self) -> None:
        self.subscribe()
        self._tasks.spawn(self._follow(), "api-metrics")

    async def _follow(self) -> None:
        assert self._subscription is not None
        async for event in self._subscription:
            self.observe(event)

    def render(self) -> bytes:
        """The metrics in Prometheus text, with every event emitted before this call counted."""
        if self._subscription is not None:
            for event in self._subscription.take_nowait():
                self.observe(event)
        return generate_latest(self.registry)

    async def aclose(self) -> None:
        if self._subscription is not None:
            self._subscription.close()
        await self._tasks.cancel_all()

    # -- folding the events ---------------------------------------------------------------------

    def observe(self, event: events.Event) -> None:
        if isinstance(event, events.CallStatusChanged):
            self._call_status(event)
        elif isinstance(event, events.CallQualityChanged):
            self.quality = event
        elif isinstance(event, events.MediaFailed):
            self.media_failures.labels(event.source if event.source in MEDIA_SOURCES else "other").inc()
            if event.source == "media-process":
                self._process_failed.add(event.consultation_id)
        elif isinstance(event, events.SessionClosed):
            self._forget(event.consultation_id)
        elif isinstance(event, events.DeviceCheckFinished):
            self.device_checks.labels(event.check, event.status).inc()
            if event.error is None:
                for device in DEVICES:
                    verdict = getattr(event, device)
                    for each in VERDICTS:
                        self.device_verdict.labels(device, each).set(1 if each == verdict else 0)
            if event.network is not None:
                self.network_verdict.clear()
                self.network_verdict.labels(event.network).set(1)
        elif isinstance(event, events.TokenRefreshed):
            self.token_refreshes.labels(event.reason).inc()
        elif isinstance(event, events.AccessRenewing):
            self.access_renewing.inc()
        elif isinstance(event, events.AccessDenied):
            self.access_denied.labels(event.operation).inc()
        elif isinstance(event, events.BusStatusChanged):
            self._bus(str(event.status))
        elif isinstance(event, events.Missed):
            self.events_missed.inc(event.count)

    def _call_status(self, event: events.CallStatusChanged) -> None:
        cid, status = event.consultation_id, event.status
        previous = self._calls.get(cid)
        self._calls[cid] = status
        self.call_status_changes.labels(status).inc()
        if status == "recovering" and previous != "recovering":
            self.rebuilds.inc()
            if cid not in self._process_failed:
                self.stalls.inc()
            self._recovering_since[cid] = time.monotonic()
        elif status in ("live", "audio-only") and cid in self._recovering_since:
            self.recovery.observe(time.monotonic() - self._recovering_since.pop(cid))
        if status != "recovering":
            self._recovering_since.pop(cid, None)
            self._process_failed.discard(cid)
        self._count_calls()

    def _forget(self, consultation_id: str) -> None:
        self._calls.pop(consultation_id, None)
        self._recovering_since.pop(consultation_id, None)
        self._process_failed.discard(consultation_id)
        self._count_calls()

    def _count_calls(self) -> None:
        for status in CALL_STATUSES:
            self.calls.labels(status).set(sum(1 for s in self._calls.values() if s == status))

    def _bus(self, status: str) -> None:
        # Every consultation on a provider's shared bus tells the same change: counted once.
        if status == "reconnecting" and self._bus_status != "reconnecting":
            self.bus_reconnects.inc()
        self._bus_status = status
