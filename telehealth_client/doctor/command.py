"""``telehealth-agent doctor [--config FILE] [--credentials DIR] [--unit FILE] [--skip CHECK] [--json]``.

One line per check (``PASS``, ``WARN``, ``FAIL`` with the fix, ``SKIP``), printed as each is known,
then the verdict. Exit 0 when no check failed or was left out unasked (warnings allowed), 1
otherwise, 2 for a usage error (argparse's). Nothing printed holds a secret: the checks say
where a secret is and what is wrong with it, never what it is.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from pathlib import Path

from telehealth_client.doctor.inputs import INSTALLED_CONFIG, INSTALLED_CREDENTIALS, INSTALLED_UNIT

DEVICES = ("camera", "microphone")
# runner.plan's checks by name (a test keeps them the same): the parser is built for every command,
# so it must not import the checks and what they load.
SKIPPABLE = ("pubnub", "clinic", "turn", *DEVICES, "local-api", "clock", "disk", "unit")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        type=Path,
        help=f"TOML settings file (default: $TELEHEALTH_CONFIG, else {INSTALLED_CONFIG} if it exists)",
    )
    parser.add_argument(
        "--credentials",
        type=Path,
        help="the secrets' directory (default: $CREDENTIALS_DIRECTORY, else "
        f"{INSTALLED_CREDENTIALS} if it exists)",
    )
    parser.add_argument(
        "--unit",
        type=Path,
        help=f"the unit to score (default: {INSTALLED_UNIT}, else this checkout's kiosk.service)",
    )
    parser.add_argument(
        "--skip",
        action="append",
        choices=(*SKIPPABLE, "devices"),
        default=[],
        help="leave a check out ('devices': the camera and the microphone); repeatable",
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON, nothing else")


def quiet_logs() -> None:
    """Errors only, on stderr: what the checks find is in their lines, and stdout is the report."""
    from telehealth_client import logs

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logs.KeyValueFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.ERROR)
    logs.quiet_url_loggers()


def run_doctor(args: argparse.Namespace) -> int:
    from telehealth_client.doctor.inputs import choose_inputs
    from telehealth_client.doctor.report import Result
    from telehealth_client.doctor.runner import first_checks, run_checks

    quiet_logs()
    skip = set(args.skip)
    if "devices" in skip:
        skip |= set(DEVICES)
    inputs = choose_inputs(args.config, args.credentials, args.unit, os.environ)
    first = first_checks(inputs)

    def show(result: Result) -> None:
        if not args.json:
            print("\n".join(result.lines()), flush=True)

    try:
        report = asyncio.run(run_checks(inputs, first, skip, show))
    except KeyboardInterrupt:
        print("telehealth-agent: doctor: interrupted", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print(report.verdict())
    return 0 if report.passed else 1
