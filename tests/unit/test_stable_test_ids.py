"""Every test's ID is the same whatever PYTHONHASHSEED is and whenever it runs, so a failing case can
be run again by its ID (parameters drawn from sets, clocks or random ciphertexts made IDs move)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def collected(seed: str) -> list[str]:
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", "tests"],
        cwd=ROOT,
        env={**os.environ, "PYTHONHASHSEED": seed},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    return sorted(line for line in result.stdout.splitlines() if "::" in line)


def test_the_suite_s_test_ids_do_not_depend_on_the_hash_seed_or_the_clock() -> None:
    first, second = collected("1"), collected("2")
    assert len(first) > 2000  # the whole suite was collected
    assert set(first) ^ set(second) == set()
