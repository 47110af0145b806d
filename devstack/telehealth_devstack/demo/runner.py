"""Runs the demo's steps in order, each within its timeout, and prints one line per step.

A line gives the time since the demo started, the step and what each agent saw. The first step
that fails (an error, a wrong result, or its time running out) ends the run: its line says why,
stderr names it, and the exit code is 1. Every part is closed whatever happened.

Public API:

- ``DemoOptions(step_timeout_seconds=10.0, json_lines=False, skip_consent=False,
  keep_running=False, verbose=False)``.
- ``await run_steps(options, state_dir, steps=STEPS, out=sys.stdout, err=sys.stderr) -> int``:
  0 when every step passed (with ``keep_running``: and the stack and kiosk agent kept up afterwards
  stopped cleanly on a signal), 1 otherwise.
- ``failure_reason(exc)``: a failure as text without PHI or secrets (known errors carry only
  fields, codes and reasons; anything else is named by type and place).
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from telehealth_client.consultation.lifecycle import TransitionError
from telehealth_client.consultation.patient import CheckInRefused
from telehealth_client.consultation.session import SessionError
from telehealth_client.logs import describe_exception
from telehealth_client.pubsub.bus import BusError
from telehealth_client.security.clinic_client import ClinicError
from telehealth_devstack.demo.cast import Cast
from telehealth_devstack.demo.keep_running import KeptKioskFailed, keep_running
from telehealth_devstack.demo.steps import STEPS, DemoFailure, Scene, Step
from telehealth_devstack.turn import TurnServerError

NAME_WIDTH = 20
CALL_BUDGET = 3  # the kept kiosk agent starts in up to a call step's time (imports, media)


@dataclass(frozen=True)
class DemoOptions:
    step_timeout_seconds: float = 10.0
    json_lines: bool = False
    skip_consent: bool = False
    keep_running: bool = False  # after the steps passed: the stack and a kiosk agent stay up
    verbose: bool = False  # the kept kiosk agent's logs on stderr


def failure_reason(exc: BaseException) -> str:
    if isinstance(exc, DemoFailure):
        return str(exc)
    if isinstance(exc, CheckInRefused):
        return f"check-in refused: {exc.field}: {exc.reason}"
    if isinstance(exc, SessionError | TransitionError):
        return f"{exc.code}: {exc.text}"
    if isinstance(exc, ClinicError):
        # The clinic's answer text is not ours to print: the operation and the status say enough.
        status = f" (HTTP {exc.status})" if exc.status else ""
        return f"clinic {exc.operation} failed{status}"
    if isinstance(exc, BusError):
        status = f" (HTTP {exc.status_code})" if exc.status_code else ""
        return f"pub/sub {exc.operation}: {exc.reason}{status}"
    if isinstance(exc, TurnServerError):
        # Our own text (a missing binary, a port, a timeout), without the tail of coturn's log.
        return str(exc).split("; coturn log:", 1)[0]
    return describe_exception(exc)


class Report:
    """Step lines as text or JSON lines; elapsed time since ``started``."""

    def __init__(self, options: DemoOptions, out: TextIO, err: TextIO) -> None:
        self._json = options.json_lines
        self._out = out
        self._err = err
        self.started = time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def _write(self, line: str) -> None:
        self._out.write(line + "\n")
        self._out.flush()

    def _json_line(self, **fields: object) -> None:
        self._write(json.dumps(fields))

    def header(self) -> None:
        if not self._json:
            self._write("telehealth-agent demo: a consultation on the development stack (IDs only, no PHI)")

    def passed(self, step: Step, seen: Sequence[tuple[str, str]]) -> None:
        elapsed = self.elapsed()
        if self._json:
            self._json_line(
                step=step.name, ok=True, elapsedMs=round(elapsed * 1000), seen=[list(pair) for pair in seen]
            )
            return
        saw = "   ".join(f"{who}: {what}" for who, what in seen)
        self._write(f"  +{elapsed:.3f}s  {step.name:<{NAME_WIDTH}}{saw}")

    def failed(self, step: Step, reason: str, seen: Sequence[tuple[str, str]]) -> None:
        elapsed = self.elapsed()
        if self._json:
            self._json_line(
                step=step.name,
                ok=False,
                elapsedMs=round(elapsed * 1000),
                reason=reason,
                seen=[list(pair) for pair in seen],
            )
        else:
            self._write(f"  +{elapsed:.3f}s  {step.name:<{NAME_WIDTH}}FAILED: {reason}")
        self._err.write(f"telehealth-agent: demo: step {step.name} failed: {reason}\n")
        self._err.flush()

    def finished(self, steps: int) -> None:
        elapsed = self.elapsed()
        if self._json:
            self._json_line(result="passed", steps=steps, elapsedMs=round(elapsed * 1000))
        else:
            self._write(f"demo passed: {steps} steps in {elapsed:.3f} s")


async def run_steps(
    options: DemoOptions,
    state_dir: Path,
    steps: Sequence[Step] = STEPS,
    out: TextIO = sys.stdout,
    err: TextIO = sys.stderr,
) -> int:
    report = Report(options, out, err)
    report.header()
    cast = Cast(state_dir)
    try:
        code = await _run(steps, Scene(cast, skip_consent=options.skip_consent), options, report)
        if code == 0 and options.keep_running:
            code = await _kept(cast, state_dir, options, out, err)
    finally:
        try:
            await cast.aclose()
        except Exception as exc:
            err.write(f"telehealth-agent: demo: stopping failed: {failure_reason(exc)}\n")
            code = 1
    return code


async def _kept(cast: Cast, state_dir: Path, options: DemoOptions, out: TextIO, err: TextIO) -> int:
    """The stack and a kiosk agent with its API, until a signal: 0 once stopped cleanly."""
    await cast.close_agents()
    try:
        await keep_running(
            cast.stack,
            state_dir / "kept",
            out,
            json_lines=options.json_lines,
            verbose=options.verbose,
            start_within=options.step_timeout_seconds * CALL_BUDGET,
        )
    except KeptKioskFailed as exc:
        err.write(f"telehealth-agent: demo: --keep-running: {exc}\n")
        return 1
    return 0


async def _run(steps: Sequence[Step], scene: Scene, options: DemoOptions, report: Report) -> int:
    for step in steps:
        scene.begin()
        timeout = options.step_timeout_seconds * step.budget
        try:
            await asyncio.wait_for(step.run(scene), timeout)
        except TimeoutError:
            waiting = f" waiting for {scene.waiting_for}" if scene.waiting_for else ""
            reason = f"timed out after {timeout:g} s{waiting}"
            report.failed(step, reason, scene.observations)
            return 1
        except Exception as exc:
            report.failed(step, failure_reason(exc), scene.observations)
            return 1
        report.passed(step, scene.observations)
    report.finished(len(steps))
    return 0
