"""The demo runner's step budget: a step may take its budget times the step timeout (the call
starts media processes), and a step over it fails naming the time it was given."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

from telehealth_devstack.demo.runner import DemoOptions, run_steps
from telehealth_devstack.demo.steps import STEPS, Scene, Step


async def never_done(scene: Scene) -> None:
    await asyncio.Event().wait()


async def test_a_step_that_does_not_finish_fails_after_its_budget(tmp_path: Path) -> None:
    out, err = io.StringIO(), io.StringIO()
    steps = [Step("slow", never_done, budget=3.0)]
    code = await run_steps(DemoOptions(step_timeout_seconds=0.05), tmp_path, steps=steps, out=out, err=err)
    assert code == 1
    assert "step slow failed: timed out after 0.15 s" in err.getvalue()


def test_only_the_call_has_a_larger_budget() -> None:
    budgets = {step.name: step.budget for step in STEPS}
    assert budgets.pop("call") == 3.0
    assert set(budgets.values()) == {1.0}
