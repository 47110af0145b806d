"""The checks in order, each with a time limit; what a check needs decides whether it runs.

The settings and the credentials are checked first, before the event loop runs (small files). The rest
run at once on the event loop (the blocking ones in threads), their results handed on in order as
each is known. A check that needs the settings or the credentials is not run when that check
failed: it says so instead. A check that fails unexpectedly is a failed check naming the
exception's type and place, never its message.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Literal

from telehealth_client.config import Settings
from telehealth_client.doctor import clinic, clock, credentials_check, disk, local_api, origin, turn, unit
from telehealth_client.doctor.device_checks import check_device
from telehealth_client.doctor.inputs import Inputs
from telehealth_client.doctor.report import Report, Result, failed, skipped
from telehealth_client.doctor.settings_check import Loaded, load
from telehealth_client.logs import describe_exception

# "secrets": the settings complete and every credential usable; "complete": the settings complete;
# "loaded": settings that load (placeholders allowed); "nothing".
Needs = Literal["secrets", "complete", "loaded", "nothing"]
# Beyond the checks' own limits (a request's time-out, a device's deadline): their last word.
NETWORK_SECONDS = 30.0
DEVICE_SECONDS = 60.0
HOST_SECONDS = 30.0


@dataclass(frozen=True)
class Check:
    name: str
    needs: Needs
    seconds: float
    run: Callable[[Settings | None], Awaitable[Result]]


def given(check: Callable[[Settings], Awaitable[Result]]) -> Callable[[Settings | None], Awaitable[Result]]:
    """A check that needs the settings (``blocked`` keeps it from running without them)."""

    async def run(settings: Settings | None) -> Result:
        if settings is None:
            raise ValueError("no settings")
        return await check(settings)

    return run


def plan(unit_path: Path | None) -> tuple[Check, ...]:
    """Checks 3 to 10, in order; ``unit_path``: the unit to score."""

    def disk_check(settings: Settings) -> Awaitable[Result]:
        return asyncio.to_thread(disk.check_disk, settings.state_dir)

    def unit_check(_settings: Settings | None) -> Awaitable[Result]:
        return asyncio.to_thread(unit.check_unit, unit_path)

    return (
        Check(origin.NAME, "secrets", NETWORK_SECONDS, given(origin.check_origin)),
        Check(clinic.NAME, "secrets", NETWORK_SECONDS, given(clinic.check_clinic)),
        Check(turn.NAME, "secrets", NETWORK_SECONDS, given(turn.check_turn)),
        Check("camera", "loaded", DEVICE_SECONDS, given(partial(check_device, "camera"))),
        Check("microphone", "loaded", DEVICE_SECONDS, given(partial(check_device, "microphone"))),
        Check(local_api.NAME, "secrets", NETWORK_SECONDS, given(local_api.check_local_api)),
        Check(clock.NAME, "complete", NETWORK_SECONDS, given(clock.check_clock)),
        Check(disk.NAME, "loaded", HOST_SECONDS, given(disk_check)),
        Check(unit.NAME, "nothing", HOST_SECONDS, unit_check),
    )


# What --skip may name (the first two always run: the others depend on them).
SKIPPABLE = tuple(check.name for check in plan(None))


@dataclass(frozen=True)
class First:
    """Checks 1 and 2: the settings as loaded, and the credentials' result."""

    loaded: Loaded
    credentials: Result

    @property
    def results(self) -> tuple[Result, Result]:
        return self.loaded.result, self.credentials


def first_checks(inputs: Inputs) -> First:
    """Checks 1 and 2 (small files: blocking, before the event loop runs)."""
    loaded = load(inputs)
    return First(loaded, credentials_check.check_credentials(inputs, loaded.base, loaded.secret_problems))


def blocked(needs: Needs, loaded: Loaded, credentials: Result) -> str | None:
    """Why a check with these needs cannot run, or None."""
    if needs == "nothing":
        return None
    if loaded.base is None:
        return "not run: the settings do not load (see settings)"
    if needs == "loaded":
        return None
    if loaded.result.status == "fail":
        return "not run: the settings are not complete (see settings)"
    if needs == "secrets" and (credentials.status == "fail" or loaded.settings is None):
        return "not run: the credentials are not usable (see credentials)"
    return None


async def _run(check: Check, settings: Settings | None) -> Result:
    try:
        return await asyncio.wait_for(check.run(settings), check.seconds)
    except TimeoutError:
        return failed(check.name, f"did not finish within {check.seconds:g} s")
    except Exception as exc:
        return failed(check.name, f"the check itself failed ({describe_exception(exc)})")


async def run_checks(
    inputs: Inputs,
    first: First,
    skip: Collection[str] = (),
    on_result: Callable[[Result], None] = lambda _result: None,
) -> Report:
    """Checks 3 to 10 after ``first``; ``on_result`` is given every result in order (the first two
    included), each as soon as it and those before it are known; ``skip``: checks to leave out."""
    loaded, credentials = first.loaded, first.credentials
    results = list(first.results)
    for result in results:
        on_result(result)
    async with asyncio.TaskGroup() as group:
        pending: list[asyncio.Task[Result] | Result] = []
        for check in plan(inputs.unit):
            why = blocked(check.needs, loaded, credentials)
            settings = loaded.settings if check.needs == "secrets" else loaded.base
            if check.name in skip:
                pending.append(skipped(check.name, "left out (--skip)", asked=True))
            elif why is not None:
                pending.append(skipped(check.name, why))
            else:
                pending.append(group.create_task(_run(check, settings), name=f"doctor-{check.name}"))
        for each in pending:
            result = each if isinstance(each, Result) else await each
            results.append(result)
            on_result(result)
    return Report(tuple(results))
