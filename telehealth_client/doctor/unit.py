"""Check 10: the unit's exposure score, ``systemd-analyze security --offline=yes UNIT``.

kiosk.service scores 1.3 ("OK"); its tests keep it at 2.0 or lower, and so does this check: a
higher score means its sandboxing was weakened (an edited unit, or a drop-in beside it: the
offline analysis of a unit file reads its ``.d/`` drop-ins too). Without ``systemd-analyze`` (a
machine without systemd, a container) the score cannot be had: a warning, not a failure, since
the service cannot run there either and the other checks still say what they found. Blocking
(a child process): run it in a thread.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

from telehealth_client.doctor.inputs import INSTALLED_UNIT
from telehealth_client.doctor.report import Result, failed, passed, warned

NAME = "unit"
HIGHEST_SCORE = 2.0
SECONDS = 30.0
_SCORE = re.compile(r"Overall exposure level for \S+: (\d+(?:\.\d+)?)")


def check_unit(unit: Path | None) -> Result:
    if unit is None:
        return failed(
            NAME,
            f"no unit at {INSTALLED_UNIT}: scripts/install-kiosk.sh installs it (--unit names another)",
        )
    if not unit.is_file():
        return failed(NAME, f"no unit at {unit}")
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        return warned(NAME, f"{unit}: not scored: systemd-analyze is not installed (it comes with systemd)")
    try:
        run = subprocess.run(
            [analyze, "security", "--offline=yes", "--no-pager", str(unit)],
            capture_output=True,
            text=True,
            timeout=SECONDS,
        )
    except subprocess.TimeoutExpired:
        return failed(NAME, f"{unit}: systemd-analyze security did not finish within {SECONDS:g} s")
    return judge_score(unit, run.stdout, run.stderr)


def judge_score(unit: Path, stdout: str, stderr: str) -> Result:
    """Pure: the verdict on systemd-analyze's report."""
    found = _SCORE.search(stdout)
    if found is None:
        said = (stderr.strip().splitlines() or ["no score in its report"])[-1]
        return failed(NAME, f"{unit}: systemd-analyze security could not score it: {said}")
    score = float(found.group(1))
    if score > HIGHEST_SCORE:
        return failed(
            NAME,
            f"{unit}: exposure {score:g}, over {HIGHEST_SCORE:g}: its sandboxing was weakened, in it or by a "
            f"drop-in ({unit.name}.d/, systemctl cat shows both); put back this version's unit",
        )
    return passed(NAME, f"{unit}: exposure {score:g} (at most {HIGHEST_SCORE:g})")
