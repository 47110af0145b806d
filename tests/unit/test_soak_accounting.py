"""The soak's pure parts (tests/support/soak): the seeded fault plan, the least-squares growth, the
window of one process's usage that growth is judged on, and the verdict on a summary."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from tests.support.soak.faults import KINDS, plan
from tests.support.soak.runner import judge
from tests.support.soak.sampling import judged_window, slope


def test_every_kind_is_planned_once_in_the_first_consultations_and_the_seed_decides_the_plan() -> None:
    first = plan(12, 25)
    assert sorted(each[0].kind for each in first[: len(KINDS)]) == sorted(KINDS)
    assert plan(12, 25) == first
    assert plan(13, 25) != first
    assert all(0.0 <= p.delay_s <= 2.0 and 2.0 <= p.length_s <= 5.0 for each in first for p in each)


def test_a_run_shorter_than_the_kinds_still_gets_every_kind() -> None:
    planned = plan(1, 3)
    assert sorted(p.kind for each in planned for p in each) == sorted(KINDS)


def test_only_draws_from_the_kinds_named_and_an_unknown_kind_is_refused() -> None:
    assert {p.kind for each in plan(1, 6, ("relay-5xx",)) for p in each} == {"relay-5xx"}
    with pytest.raises(ValueError, match="relay-down"):
        plan(1, 6, ("relay-down",))


def test_slope_is_the_least_squares_growth_per_step() -> None:
    assert slope([10.0, 12.0, 14.0, 16.0]) == pytest.approx(2.0)
    assert slope([5.0, 5.0, 5.0]) == pytest.approx(0.0)
    assert slope([1.0, 3.0, 2.0]) == pytest.approx(0.5)
    assert slope([1.0]) is None


def test_the_judged_window_is_the_longest_process_after_its_warm_up() -> None:
    # A kiosk killed after its fourth consultation: its successor starts small again.
    series = [(1, 150.0), (1, 160.0), (1, 161.0), (1, 162.0), (2, 99.0), (2, 150.0), (2, 160.0)]
    assert judged_window(series, warm_up=2) == [161.0, 162.0]
    assert judged_window([(1, 1.0), (1, 2.0)], warm_up=2) == [2.0]


GOOD: dict[str, Any] = {
    "consultations": 10,
    "failed": [],
    "planned": [["relay-5xx"]],
    "faults_by_kind": dict.fromkeys(KINDS, 1),
    "orphaned_media_children": 0,
    "chat": {"sent": 4, "in_history": 4, "lost": 0, "duplicated": 0, "forged_shown": 0, "foreign_shown": 0},
    "audit": {"kiosk": {"lost": 0, "duplicated": 0, "chain_verified": True, "verify": []}},
    "growth": {"kiosk.agent.rss_mb": {"after_warm_up": {"min": 150.0, "max": 160.0}}},
}


@pytest.mark.parametrize(
    ("path", "value", "problem"),
    [
        (("chat", "lost"), 1, "chat: 1 lost"),
        (("chat", "duplicated"), 2, "chat: 2 duplicated"),
        (("chat", "forged_shown"), 1, "chat: 1 forged_shown"),
        (("chat", "in_history"), 3, "chat: 1 sent never in PubNub's history"),
        (("audit", "kiosk", "lost"), 3, "audit (kiosk): 3 lost"),
        (("audit", "kiosk", "chain_verified"), False, "the chain does not verify"),
        (("faults_by_kind", "relay-5xx"), 0, "fault relay-5xx planned, never injected"),
        (("orphaned_media_children",), 1, "outlived their killed agent"),
        (("growth", "kiosk.agent.rss_mb", "after_warm_up", "max"), 191.0, "kiosk.agent.rss_mb grew 41.0"),
    ],
)
def test_judge_names_each_problem(path: tuple[str, ...], value: object, problem: str) -> None:
    assert judge(GOOD) == []
    bad = copy.deepcopy(GOOD)
    target = bad
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    assert any(problem in each for each in judge(bad)), judge(bad)


def test_judge_names_a_failed_consultation_and_its_step() -> None:
    bad = {**GOOD, "failed": [{"index": 4, "step": "call", "error": "TimeoutError: never live"}]}
    assert judge(bad) == ["consultation 4 failed at call: TimeoutError: never live"]
