"""What the doctor found: one ``Result`` per check, and the ``Report`` of them all.

A result is ``pass``, ``warn`` (it works, with something to know: a development setting, a check
this machine cannot make), ``fail`` (with the fix) or ``skip`` (not run: asked with ``--skip``,
or a check it needs failed). The doctor passes when nothing failed and nothing was left out
that was not asked to be.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

Status = Literal["pass", "warn", "fail", "skip"]
NAME_WIDTH = 11


@dataclass(frozen=True)
class Result:
    """One check: ``summary`` is its line; ``details`` one problem (with its fix) or fact a line."""

    name: str
    status: Status
    summary: str
    details: tuple[str, ...] = ()
    asked: bool = False  # a skip the operator asked for (--skip)

    def lines(self) -> list[str]:
        head = f"{self.status.upper():<4}  {self.name:<{NAME_WIDTH}}  {self.summary}"
        return [head, *(f"{'':<4}  {'':<{NAME_WIDTH}}  - {detail}" for detail in self.details)]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def plural(count: int, noun: str) -> str:
    """``1 problem``, ``2 problems``."""
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def failed(name: str, summary: str, details: tuple[str, ...] | list[str] = ()) -> Result:
    return Result(name, "fail", summary, tuple(details))


def passed(name: str, summary: str, details: tuple[str, ...] | list[str] = ()) -> Result:
    return Result(name, "pass", summary, tuple(details))


def warned(name: str, summary: str, details: tuple[str, ...] | list[str] = ()) -> Result:
    return Result(name, "warn", summary, tuple(details))


def skipped(name: str, why: str, *, asked: bool = False) -> Result:
    return Result(name, "skip", why, asked=asked)


@dataclass(frozen=True)
class Report:
    results: tuple[Result, ...]

    @property
    def passed(self) -> bool:
        return all(
            result.status in ("pass", "warn") or (result.status == "skip" and result.asked)
            for result in self.results
        )

    def verdict(self) -> str:
        """The last line: PASS or FAIL, and how many of each."""
        counts = {status: 0 for status in ("pass", "warn", "fail", "skip")}
        for result in self.results:
            counts[result.status] += 1
        words = {"pass": "passed", "warn": "with a warning", "fail": "failed", "skip": "not run"}
        tally = ", ".join(f"{count} {words[status]}" for status, count in counts.items() if count)
        return f"doctor: {'PASS' if self.passed else 'FAIL'} ({tally})"

    def to_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, "checks": [result.to_dict() for result in self.results]}
