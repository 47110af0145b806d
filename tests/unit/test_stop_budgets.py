"""The stop's one deadline (``stop_budgets``): a step's budget is cut to what is left of it, for the
task that opened it and the tasks started from it, and for nothing else."""

from __future__ import annotations

import asyncio

from telehealth_client.stop_budgets import (
    END_CALL_SECONDS,
    FLUSH_SECONDS,
    LEAVE_SECONDS,
    SINK_SECONDS,
    STOP_SECONDS,
    WORST_CASE_SECONDS,
    budget,
    stop_clock,
    stopping,
)


def test_outside_a_stop_a_step_gets_its_whole_budget() -> None:
    assert not stopping()
    assert budget(LEAVE_SECONDS) == LEAVE_SECONDS
    assert budget(30.0) == 30.0


def test_within_a_stop_no_step_waits_past_its_deadline() -> None:
    with stop_clock(0.5):
        assert stopping()
        assert 0.0 < budget(LEAVE_SECONDS) <= 0.5
        assert budget(0.1) == 0.1  # a smaller budget is kept
    with stop_clock(0.0):
        assert budget(LEAVE_SECONDS) == 0.0  # used up: never negative
    assert budget(LEAVE_SECONDS) == LEAVE_SECONDS  # over with the stop


def test_a_clock_already_running_is_kept() -> None:
    with stop_clock(0.2), stop_clock(10.0):
        assert budget(5.0) <= 0.2


async def test_tasks_started_within_the_stop_share_its_deadline_and_others_do_not() -> None:
    seen: dict[str, float] = {}
    go = asyncio.Event()

    async def step(name: str) -> None:
        await go.wait()
        seen[name] = budget(LEAVE_SECONDS)

    before = asyncio.create_task(step("before"))  # another agent's, or one started before the stop
    with stop_clock(0.3):
        within = asyncio.create_task(step("within"))  # a consultation's close, started by the stop
        go.set()
        await asyncio.gather(before, within)
    assert seen["before"] == LEAVE_SECONDS
    assert seen["within"] <= 0.3


def test_the_worst_case_is_the_one_deadline_not_the_sum_of_the_steps() -> None:
    assert WORST_CASE_SECONDS == STOP_SECONDS < 2.0  # issue 24: a stop under 2 s
    assert END_CALL_SECONDS + FLUSH_SECONDS + LEAVE_SECONDS + SINK_SECONDS > STOP_SECONDS
