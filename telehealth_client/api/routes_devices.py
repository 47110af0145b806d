"""Device checks and the preflight, run in the background (``api/device_checks.py``), one at a time.

``POST /v1/device-checks`` starts a check of the settings' camera, microphone and speaker (202;
409 while a check or preflight runs, or while a call may hold the devices); ``GET
/v1/device-checks/{id}`` its progress and then its report; ``GET .../snapshot`` the camera's
picture as ``image/jpeg``. ``POST /v1/preflight`` runs the agent's preflight (the devices, then the
network; a kiosk's verdicts go to the provider as ``DEVICE_STATUS``); ``GET /v1/preflight/{id}``
its report. Only the newest check of each kind is kept (an older ID is 404). Each device's verdict
and the end are also told on the event stream (``device-checked``, ``device-check-finished``).

The snapshot shows whoever stands in front of the camera: each read is recorded in the audit
trail first (``PHI_FILE_ACCESSED``, the agent's own user as actor, the check's ID as the resource),
and is not served when it cannot be recorded.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from telehealth_client.api.audited import audit_or_503
from telehealth_client.api.device_checks import CheckKind, CheckRun, CheckRunning, DeviceChecks
from telehealth_client.api.errors import ApiError
from telehealth_client.api.models import (
    DeviceCheckAnswer,
    DeviceCheckRequest,
    DeviceCheckView,
    DeviceStepView,
    PreflightRequest,
    dump,
)
from telehealth_client.api.routing import CALLERS, Call, Route

if TYPE_CHECKING:
    from telehealth_client.preflight import PreflightReport

SNAPSHOT_RESOURCE = "camera-snapshot"
# A call may hold the camera and the microphone, and the speaker check's tone would be heard in it.
CALL_STATES = frozenset({"connecting", "in-progress", "wrapping-up"})


def checks_of(call: Call) -> DeviceChecks:
    checks = call.state.checks
    if checks is None:
        raise ApiError(409, "not-started", "the device checks are not running", state="none")
    return checks


def check_view(run: CheckRun) -> DeviceCheckView:
    preflight = run.preflight
    return DeviceCheckView(
        id=run.id,
        kind=run.kind,
        state=run.state,
        skip=list(run.skip),
        started_at=run.started_at,
        finished_at=run.finished_at,
        steps=[
            DeviceStepView(kind=step.kind, device=step.device, status=step.status, reasons=list(step.reasons))
            for step in run.steps
        ],
        snapshot=run.state == "done" and run.snapshot is not None,
        report=run.devices if run.state != "running" else None,
        network=None if preflight is None else preflight.network.to_dict(),
        passed=None if preflight is None else preflight.passed,
        error=run.error,
    )


def _refuse_during_a_call(call: Call) -> None:
    agent = call.agent
    states: list[str] = []
    if agent.patient is not None and agent.patient.state is not None:
        states.append(str(agent.patient.state))
    if agent.provider is not None:
        states.extend(str(s.consultation.state) for s in agent.provider.sessions.values() if not s.closed)
    busy = next((state for state in states if state in CALL_STATES), None)
    if busy is not None:
        raise ApiError(
            409,
            "in-call",
            "a consultation's call may hold the devices now: check them between calls",
            state=busy,
        )


def _running(exc: CheckRunning) -> ApiError:
    running = exc.running
    return ApiError(
        409,
        "check-running",
        f"a {'preflight' if running.kind == 'preflight' else 'device check'} is running ({running.id}): "
        "one at a time",
        state="running",
    )


def _located(run: CheckRun, path: str) -> web.StreamResponse:
    return web.json_response(
        dump(DeviceCheckAnswer(check=check_view(run))), status=202, headers={"Location": f"{path}/{run.id}"}
    )


async def start_device_check(call: Call) -> web.StreamResponse:
    _refuse_during_a_call(call)
    body: DeviceCheckRequest = call.body
    if len(set(body.skip)) >= 3:
        raise ApiError(
            422, "invalid-body", "nothing left to check", [("skip", "must leave a device to check")]
        )
    try:
        run = checks_of(call).start_devices(call.agent.settings, set(body.skip))
    except CheckRunning as exc:
        raise _running(exc) from None
    return _located(run, "/v1/device-checks")


async def start_preflight(call: Call) -> web.StreamResponse:
    _refuse_during_a_call(call)
    body: PreflightRequest = call.body
    agent = call.agent

    async def preflight(skip: frozenset[str]) -> PreflightReport:
        return await agent.preflight(skip=skip)

    try:
        run = checks_of(call).start_preflight(preflight, set(body.skip))
    except CheckRunning as exc:
        raise _running(exc) from None
    return _located(run, "/v1/preflight")


def _run(call: Call, kind: CheckKind) -> CheckRun:
    run = checks_of(call).get(kind, call.param("check_id"))
    if run is None:
        raise ApiError(404, "unknown-check", "no such check: only the newest of each kind is kept")
    return run


async def device_check(call: Call) -> DeviceCheckAnswer:
    return DeviceCheckAnswer(check=check_view(_run(call, "devices")))


async def preflight_result(call: Call) -> DeviceCheckAnswer:
    return DeviceCheckAnswer(check=check_view(_run(call, "preflight")))


async def snapshot(call: Call) -> web.StreamResponse:
    run = _run(call, "devices")
    if run.state == "running":
        raise ApiError(
            409, "check-running", "the check is still running: its snapshot follows", state="running"
        )
    jpeg = run.snapshot
    if jpeg is None:
        raise ApiError(404, "no-snapshot", "this check has no camera snapshot (camera skipped or failed)")
    agent = call.agent
    if agent.durable is None:
        raise ApiError(
            409, "not-started", "the audit trail is not open: the snapshot is not served", state="none"
        )
    # Recorded before it is served: a read that cannot be audited does not happen (503).
    await audit_or_503(
        call, "snapshot", lambda auditor: auditor.file_accessed(SNAPSHOT_RESOURCE, run.id, "local-api")
    )
    return web.Response(
        body=jpeg, content_type="image/jpeg", headers={"Cache-Control": "no-store", "X-Check-Id": run.id}
    )


ROUTES = [
    Route(
        "POST", "/v1/device-checks", start_device_check,
        "Check the settings' camera, microphone and speaker in the background (202; one at a time)",
        "devices", roles=CALLERS, body=DeviceCheckRequest, answer=DeviceCheckAnswer, status=202,
        conflicts=True,
    ),
    Route(
        "GET", "/v1/device-checks/{check_id}", device_check,
        "A device check's progress (each device's verdict as it comes), then its report", "devices",
        roles=CALLERS, answer=DeviceCheckAnswer, errors=(404,),
    ),
    Route(
        "GET", "/v1/device-checks/{check_id}/snapshot", snapshot,
        "The check's camera snapshot, a JPEG (PHI: each read is audited, PHI_FILE_ACCESSED)", "devices",
        roles=CALLERS, media_type="image/jpeg", conflicts=True, errors=(404,),
    ),
    Route(
        "POST", "/v1/preflight", start_preflight,
        "Run the preflight in the background: the devices, then the network (202; one at a time)",
        "devices", roles=CALLERS, body=PreflightRequest, answer=DeviceCheckAnswer, status=202, conflicts=True,
    ),
    Route(
        "GET", "/v1/preflight/{check_id}", preflight_result,
        "A preflight's progress, then its report: the verdict (video, audio-only, cannot-connect) and why",
        "devices", roles=CALLERS, answer=DeviceCheckAnswer, errors=(404,),
    ),
]  # fmt: skip
