"""Every test's ID is the same whatever PYTHONHASHSEED is and whenever it runs, so a failing case can
be run again by its ID (parameters drawn from sets, clocks or random ciphertexts made IDs move)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
WHOLE_SUITE = 2000  # the whole suite has more tests than this


def collection(seed: str) -> subprocess.Popen[str]:
    """The whole ``tests`` tree being collected under ``seed`` in a child process."""
    return subprocess.Popen(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", "tests"],
        cwd=ROOT,
        env={**os.environ, "PYTHONHASHSEED": seed},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def collected(process: subprocess.Popen[str]) -> set[str]:
    """The test IDs ``process`` (a ``collection``) found."""
    try:
        stdout, stderr = process.communicate(timeout=300)
    finally:
        process.kill()  # only if it is still running: it timed out
    assert process.returncode == 0, stdout[-2000:] + stderr[-2000:]
    return {line for line in stdout.splitlines() if "::" in line}


def asked_for_the_tree(config: pytest.Config) -> bool:
    """Whether this run was given the whole ``tests`` tree (or the checkout holding it) to collect."""
    here = config.invocation_params.dir
    asked = {(here / arg.split("::")[0]).resolve() for arg in config.args}
    return bool(asked & {ROOT, ROOT / "tests"})


def test_the_suite_s_test_ids_do_not_depend_on_the_hash_seed_or_the_clock(
    request: pytest.FixtureRequest,
) -> None:
    # This run's own IDs (its seed is pytest's random one) against a collection of the whole
    # ``tests`` tree under a fixed seed, when this run collected that whole tree: it was asked for
    # it and kept as many tests (IDs that moved with the seed differ, they are not fewer or more).
    # Any other run (some paths, -k, -m, more than the tree) collects the tree again under another
    # seed instead, whatever its size.
    ours = {item.nodeid for item in request.session.items}
    asked = asked_for_the_tree(request.config)
    other = None if asked else collection("2")  # side by side with the first: half the wait
    try:
        first = collected(collection("0"))  # 0: no hash randomisation at all, unlike this run's
        whole = asked and len(ours) == len(first)
        second = ours if whole else collected(other or collection("2"))
    finally:
        if other is not None:
            other.kill()  # only if it is still running: the first failed
    assert len(first) > WHOLE_SUITE  # the whole suite was collected
    assert first ^ second == set()
