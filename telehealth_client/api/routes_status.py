"""Health, readiness, status, the event stream, the OpenAPI document and the Prometheus metrics."""

from __future__ import annotations

from aiohttp import web

from telehealth_client.api.errors import ApiError
from telehealth_client.api.events_stream import stream_events
from telehealth_client.api.models import DeviceVerdicts, HealthAnswer, ReadyAnswer, StatusAnswer
from telehealth_client.api.routing import Call, Route
from telehealth_client.api.views import consultations, pubsub_status
from telehealth_client.events.catalogue import TokenExpiring


async def health(call: Call) -> web.StreamResponse:
    """200 while the agent can do its work; 503 naming why not. An idle kiosk holds no pub/sub
    connection by design (the clinic grants patient tokens per consultation), so it is healthy
    with ``pubsub: idle``; otherwise the connection it needs must be up (``connected``). The clinic
    backend is not probed: it is asked only when needed, and its absence is survivable."""
    status = pubsub_status(call.agent)
    if status in ("idle", "connected"):
        answer = HealthAnswer(ok=True, pubsub=status)
        return web.json_response(answer.model_dump(mode="json", by_alias=True))
    answer = HealthAnswer(ok=False, pubsub=status, reason=f"pub/sub is {status}")
    return web.json_response(answer.model_dump(mode="json", by_alias=True), status=503)


async def ready(call: Call) -> web.StreamResponse:
    """200 once the agent has started and takes requests; 503 while its endpoint comes up (the
    reason says what it waits for) and while it stops."""
    role = str(call.agent.settings.role)
    if call.state.closing or call.agent.starting:
        reason = "stopping" if call.state.closing else f"starting: {call.agent.status}"
        answer = ReadyAnswer(ready=False, role=role, reason=reason)
        return web.json_response(answer.model_dump(mode="json", by_alias=True), status=503)
    return web.json_response(ReadyAnswer(ready=True, role=role).model_dump(mode="json", by_alias=True))


def _token_expiring_at(call: Call) -> object:
    latest = call.ring.latest(TokenExpiring.kind)
    return None if latest is None else latest.get("expires_at")


def _device_verdicts(call: Call) -> DeviceVerdicts | None:
    """The newest device check's or preflight's verdicts (the one that started last)."""
    checks = call.state.checks
    if checks is None:
        return None
    runs = [run for run in (checks.latest("devices"), checks.latest("preflight")) if run is not None]
    if not runs:
        return None
    run = max(runs, key=lambda each: each.started_at)
    return DeviceVerdicts(
        check_id=run.id,
        state=run.state,
        camera=run.verdict("camera"),
        microphone=run.verdict("microphone"),
        speaker=run.verdict("speaker"),
        network=None if run.preflight is None else run.preflight.network.verdict,
    )


async def status(call: Call) -> StatusAnswer:
    agent = call.agent
    outbox = agent.durable.outbox if agent.durable is not None else None
    return StatusAnswer.model_validate(
        {
            "role": str(agent.settings.role),
            "userId": agent.settings.user_id,
            "status": agent.status,
            "pubsub": pubsub_status(agent),
            "consultations": consultations(agent, call.state.calls),
            "outboxBacklog": None if outbox is None else len(outbox.pending()),
            "tokenExpiringAt": _token_expiring_at(call),
            "eventsLastId": call.ring.last_id,
            "devices": _device_verdicts(call),
        }
    )


async def events(call: Call) -> web.StreamResponse:
    with call.state.event_streams.held():
        return await stream_events(call.request, call.ring)


async def openapi(call: Call) -> web.StreamResponse:
    from telehealth_client.api.openapi import OPENAPI_KEY

    return web.json_response(call.request.app[OPENAPI_KEY].document)


async def metrics(call: Call) -> web.StreamResponse:
    from telehealth_client.api.metrics import CONTENT_TYPE

    collector = call.state.metrics
    if collector is None:
        raise ApiError(409, "not-started", "the metrics are not collected", state="none")
    return web.Response(body=collector.render(), headers={"Content-Type": CONTENT_TYPE})


ROUTES = [
    Route(
        "GET", "/v1/health", health, "Is the agent healthy (200) or not (503, with the reason)?", "status",
        answer=HealthAnswer, public=True, errors=(503,),
    ),
    Route(
        "GET", "/v1/ready", ready, "Has the agent started and does it take requests?", "status",
        answer=ReadyAnswer, errors=(503,),
    ),
    Route(
        "GET", "/v1/status", status,
        "Role, consultations (state, roster, queue position, call), pub/sub, outbox backlog, the newest "
        "device verdicts", "status",
        answer=StatusAnswer,
    ),
    Route(
        "GET", "/v1/events", events,
        "Every hub event as Server-Sent Events; resume with Last-Event-ID (a `missed` event says what is "
        "gone)", "events", stream=True,
    ),
    Route("GET", "/v1/openapi.json", openapi, "This document (OpenAPI 3.1)", "status"),
    Route(
        "GET", "/metrics", metrics,
        "Prometheus metrics (text format): calls, quality, rebuilds and recovery times, stalls, backlogs, "
        "device verdicts, token refreshes, bus reconnects", "metrics",
        media_type="text/plain",
    ),
]  # fmt: skip
