"""The device checks and preflights the local API runs: in the background, one at a time.

``DeviceChecks`` starts a check of the settings' camera, microphone and speaker
(``devices.run_device_check``: the blocking work runs in worker threads) or a preflight
(``Agent.preflight``: the devices, then the network; on a kiosk its verdicts go to the provider as
``DEVICE_STATUS``), and keeps the newest of each kind with its progress and its result. Both open
the same devices, so while one runs another is refused (``CheckRunning``). It tells each device's
verdict and the end on the hub (``DeviceChecked``, ``DeviceCheckFinished``: verdicts only; the
report, with device names and levels, is read through the API). The camera snapshot (a picture of
whoever stands at the kiosk) stays in memory, with its check, until a newer check replaces it.

Public API: ``DeviceChecks(hub)``: ``start_devices(settings, skip)``,
``start_preflight(run, skip)``, ``get(kind, check_id)``, ``latest(kind)``, ``running``,
``await aclose()``; ``CheckRun``; ``CheckRunning``.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

from telehealth_client import events
from telehealth_client.logs import describe_exception
from telehealth_client.tasks import OwnedTasks

if TYPE_CHECKING:  # the device checks load numpy and OpenCV when a check runs, not before
    from devices.report import DeviceReport, StepResult
    from telehealth_client.config import Settings
    from telehealth_client.preflight import PreflightReport

log = logging.getLogger(__name__)

CheckKind = Literal["devices", "preflight"]
CheckState = Literal["running", "done", "failed"]
Verdict = Literal["ok", "warn", "fail", "skipped", "pending", "unknown"]
DEVICES = ("camera", "microphone", "speaker")


class CheckRunning(Exception):
    """A device check or preflight is under way: only one opens the devices at a time."""

    def __init__(self, running: CheckRun) -> None:
        super().__init__(f"{running.kind} {running.id} is running")
        self.running = running


@dataclass
class CheckRun:
    """One device check or preflight: its progress (``steps``, as each device's verdict is known)
    and, once over, its report (or ``error``, a code, when it could not run)."""

    id: str
    kind: CheckKind
    skip: tuple[str, ...]
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    state: CheckState = "running"
    finished_at: datetime | None = None
    steps: list[StepResult] = field(default_factory=list)
    devices: DeviceReport | None = None
    preflight: PreflightReport | None = None
    error: str | None = None

    @property
    def snapshot(self) -> bytes | None:
        devices = self.devices
        camera = devices.camera if devices is not None else None
        return None if camera is None else camera.snapshot_jpeg

    def verdict(self, device: str) -> Verdict:
        """ok, warn or fail; skipped (left out), pending (not known yet) or unknown (it ended
        without one: the check could not run)."""
        if device in self.skip or "devices" in self.skip:
            return "skipped"
        step = getattr(self.devices, device, None) if self.devices is not None else None
        if step is None:
            step = next((s for s in self.steps if s.kind == device), None)
        if step is not None:
            return step.status
        return "pending" if self.state == "running" else "unknown"


class DeviceChecks:
    def __init__(self, hub: events.EventSink) -> None:
        self._hub = hub
        self._tasks = OwnedTasks()
        self._latest: dict[CheckKind, CheckRun] = {}
        self._running: CheckRun | None = None

    @property
    def running(self) -> CheckRun | None:
        return self._running

    def latest(self, kind: CheckKind) -> CheckRun | None:
        return self._latest.get(kind)

    def get(self, kind: CheckKind, check_id: str) -> CheckRun | None:
        """The check of that ID, if it is still the newest of its kind (older ones are forgotten)."""
        latest = self._latest.get(kind)
        return latest if latest is not None and latest.id == check_id else None

    def start_devices(self, settings: Settings, skip: Collection[str]) -> CheckRun:
        """Check the settings' devices (not those in ``skip``) in the background."""
        run = self._begin("devices", skip)

        async def work() -> None:
            from devices.check import run_device_check

            def on_step(step: StepResult) -> None:
                run.steps.append(step)
                self._hub.emit(events.DeviceChecked(run.id, step.kind, step.status))

            run.devices = await run_device_check(
                settings.camera,
                settings.microphone,
                settings.speaker,
                settings.device_thresholds,
                on_step=on_step,
                skip=tuple(skip),  # type: ignore[arg-type]
            )

        self._tasks.spawn(self._run(run, work), f"api-device-check-{run.id}")
        return run

    def start_preflight(
        self, preflight: Callable[[frozenset[str]], Awaitable[PreflightReport]], skip: Collection[str]
    ) -> CheckRun:
        """Run ``preflight(skip)`` (the agent's) in the background."""
        run = self._begin("preflight", skip)

        async def work() -> None:
            report = await preflight(frozenset(skip))
            run.preflight = report
            run.devices = report.devices
            if report.devices is not None:
                run.steps = list(report.devices.steps)

        self._tasks.spawn(self._run(run, work), f"api-preflight-{run.id}")
        return run

    def _begin(self, kind: CheckKind, skip: Collection[str]) -> CheckRun:
        if self._running is not None:
            raise CheckRunning(self._running)
        prefix = "devchk" if kind == "devices" else "preflight"
        run = CheckRun(f"{prefix}-{secrets.token_hex(8)}", kind, tuple(sorted(skip)))
        self._running = run
        self._latest[kind] = run
        return run

    async def _run(self, run: CheckRun, work: Callable[[], Awaitable[Any]]) -> None:
        try:
            await work()
            run.state = "done"
        except Exception as exc:
            # Type and place only: an exception's text may name a device or a path.
            log.error("api %s failed check=%s error=%s", run.kind, run.id, describe_exception(exc))
            run.state = "failed"
            run.error = type(exc).__name__
        finally:
            run.finished_at = datetime.now(UTC)
            if self._running is run:
                self._running = None
        network = run.preflight.network.verdict if run.preflight is not None else None
        verdicts = [_final(run.verdict(device)) for device in DEVICES]
        status = "fail" if run.state == "failed" else _worst(verdicts)
        if run.preflight is not None and not run.preflight.passed:
            status = "fail"  # the network cannot hold a video call
        self._hub.emit(
            events.DeviceCheckFinished(
                run.id, run.kind, status, verdicts[0], verdicts[1], verdicts[2], network, run.error
            )
        )

    async def aclose(self) -> None:
        """Stop waiting for a check under way (its worker threads end when the drivers give up)."""
        await self._tasks.cancel_all()
        self._running = None


_RANK: dict[events.DeviceVerdict, int] = {"skipped": 0, "ok": 0, "warn": 1, "unknown": 2, "fail": 3}


def _final(verdict: Verdict) -> events.DeviceVerdict:
    return "unknown" if verdict == "pending" else verdict


def _worst(verdicts: list[events.DeviceVerdict]) -> events.DeviceVerdict:
    checked = [v for v in verdicts if v != "skipped"]
    return max(checked, key=_RANK.__getitem__, default="skipped")
