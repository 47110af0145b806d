"""The development stack's commands in ``telehealth-agent``: ``devstack`` and ``demo``.

Added through the entry point group ``telehealth_agent.commands`` (devstack/pyproject.toml): the
agent's command line lists them when this distribution is installed and names nothing of it
otherwise. Importing this module is cheap (the command line loads it for every command); each
command imports what it runs only when it runs.

Public API: ``devstack``, ``demo`` (each with ``help``, ``add_arguments(parser)``, ``run(args)``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Final

EXIT_FAILURE: Final = 1
MAX_STEP_TIMEOUT_SECONDS: Final = 300.0


class DevstackCommand:
    help = "run the development relay, clinic stand-in and coturn on loopback (not for production)"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--env-file", type=Path, help="also write the agent's settings to this file")
        parser.add_argument("--open-access", action="store_true", help="do not enforce Access Manager tokens")
        parser.add_argument(
            "--state-dir",
            type=Path,
            help="keep keys, issued and revoked tokens, history, App Context, consent and audit events "
            "here across restarts (default: a fresh temporary directory, removed at exit)",
        )
        for role in ("provider", "nurse"):
            parser.add_argument(
                f"--{role}",
                action="append",
                metavar="ID[:DEPT]",
                help=f"a {role} the clinic knows, in department DEPT (default er); repeatable. With "
                "neither --provider nor --nurse: the provider dr-demo",
            )

    def run(self, args: argparse.Namespace) -> int:
        from telehealth_devstack.serve import run_devstack

        return run_devstack(args.env_file, args.open_access, args.state_dir, args.provider, args.nurse)


class DemoCommand:
    help = (
        "run a whole consultation on the development stack and print each step (exit 0 passed, "
        "1 a step failed)"
    )

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--verbose", action="store_true", help="show the agents' logs (INFO); default WARNING"
        )
        parser.add_argument("--json", action="store_true", help="one JSON object per step on stdout")
        parser.add_argument(
            "--step-timeout",
            type=step_timeout,
            default=10.0,
            metavar="SECONDS",
            help="how long one step may take before the demo fails naming it (default 10; the call step "
            "three times that: it starts the media processes)",
        )
        parser.add_argument(
            "--skip-consent",
            action="store_true",
            help="record no consent for the patient: the clinic refuses check-in (consent: missing) and "
            "the demo exits 1 naming the check-in step; shows how a failed step is reported",
        )

        parser.add_argument(
            "--keep-running",
            action="store_true",
            help="after the consultation, keep the stack and a kiosk agent with its local API up, print "
            "the technician page's URL and the API token, until Ctrl-C or SIGTERM (exit 0)",
        )

    def run(self, args: argparse.Namespace) -> int:
        from telehealth_devstack.demo import DemoOptions, run_demo

        options = DemoOptions(
            step_timeout_seconds=args.step_timeout,
            json_lines=args.json,
            skip_consent=args.skip_consent,
            keep_running=args.keep_running,
            verbose=args.verbose,
        )
        try:
            return run_demo(options, verbose=args.verbose)
        except KeyboardInterrupt:
            print("telehealth-agent: demo: interrupted", file=sys.stderr)
            return EXIT_FAILURE


def step_timeout(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number of seconds, got {text!r}") from None
    if not 0 < seconds <= MAX_STEP_TIMEOUT_SECONDS:  # also refuses nan and inf
        raise argparse.ArgumentTypeError(
            f"must be above 0 and at most {MAX_STEP_TIMEOUT_SECONDS:g} seconds, got {text!r}"
        )
    return seconds


devstack = DevstackCommand()
demo = DemoCommand()
