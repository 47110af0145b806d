"""The killed share per module of the last mutmut run (scripts/mutation.sh), from mutants/*.meta.

killed% = killed / all mutants of the module. A timeout (the mutant made its tests run past mutmut's
limit), "no tests" (no selected test calls the mutated function) and a mutant not yet checked all count
as not killed; detected% also counts timeouts as found. With --survivors, the diff of every mutant not
killed follows the table.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

# mutmut's own mapping of a test run's exit code to a verdict, so the table agrees with `mutmut results`.
from mutmut.mutation.diff_apply import get_diff_for_mutant
from mutmut.stats import status_by_exit_code

MUTANTS = Path("mutants")
COLUMNS = ("killed", "timeout", "survived", "no tests", "not checked", "other")
# Rows are grouped as the issue names the mutated areas.
GROUPS = (
    "telehealth_client/pubsub/",
    "telehealth_client/protocol/",
    "telehealth_client/security/",
    "devstack/telehealth_devstack/relay/access.py",
    "telehealth_client/config.py",
    "telehealth_client/media/negotiation.py",
    "telehealth_client/media/common.py",
)


@dataclass
class Tally:
    counts: Counter[str] = field(default_factory=Counter)
    not_killed: list[tuple[str, str]] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def add(self, name: str, exit_code: int | None) -> None:
        status = status_by_exit_code[exit_code]
        column = status if status in COLUMNS else "other"
        self.counts[column] += 1
        if status != "killed":
            self.not_killed.append((name, status))

    def merge(self, other: Tally) -> None:
        self.counts.update(other.counts)


def load_tallies() -> dict[str, Tally]:
    tallies: dict[str, Tally] = {}
    for meta in sorted(MUTANTS.rglob("*.py.meta")):
        source = meta.relative_to(MUTANTS).as_posix().removesuffix(".meta")
        exit_codes: dict[str, int | None] = json.loads(meta.read_text())["exit_code_by_key"]
        if not exit_codes:
            continue  # a file without functions (an empty __init__.py, say)
        tally = tallies.setdefault(source, Tally())
        for name, exit_code in sorted(exit_codes.items()):
            tally.add(name, exit_code)
    return tallies


def row(label: str, tally: Tally) -> str:
    total = tally.total
    killed = tally.counts["killed"]
    detected = killed + tally.counts["timeout"]
    cells = " ".join(f"{tally.counts[c]:>{max(8, len(c))}}" for c in COLUMNS)
    return f"{label:<48} {total:>7} {cells} {100 * killed / total:>7.1f}% {100 * detected / total:>8.1f}%"


def print_table(tallies: dict[str, Tally]) -> None:
    header = " ".join(f"{c:>{max(8, len(c))}}" for c in COLUMNS)
    print(f"{'module':<48} {'mutants':>7} {header} {'killed':>8} {'detected':>9}")
    everything = Tally()
    for group in GROUPS:
        members = {path: t for path, t in tallies.items() if path == group or path.startswith(group)}
        if not members:
            continue
        group_tally = Tally()
        for path, tally in members.items():
            if len(members) > 1 or path != group:
                print(row(f"  {path}", tally))
            group_tally.merge(tally)
        print(row(group, group_tally))
        everything.merge(group_tally)
    if everything.total:
        print(row("all", everything))
    print(
        "killed = killed / mutants; detected = (killed + timeout) / mutants; "
        "'no tests', 'not checked' (an interrupted run) and 'other' (suspicious, segfault) are not killed."
    )


def print_survivors(tallies: dict[str, Tally]) -> None:
    for path, tally in tallies.items():
        for name, status in tally.not_killed:
            print(f"\n# {name}: {status}")
            print(get_diff_for_mutant(name, path=path))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--survivors", action="store_true", help="also print the diff of every mutant not killed"
    )
    args = parser.parse_args()
    tallies = load_tallies()
    if not tallies:
        print("no mutation results in mutants/: run scripts/mutation.sh first", file=sys.stderr)
        return 1
    print_table(tallies)
    if args.survivors:
        print_survivors(tallies)
    return 0


if __name__ == "__main__":
    sys.exit(main())
