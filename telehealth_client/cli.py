"""The ``telehealth-agent`` command line.

Exit codes: 0 success, 1 failure at run time, 2 usage or configuration error.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from telehealth_client import __version__, logs

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="telehealth-agent", description="Headless telehealth agent for kiosks and exam-room carts."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_parser("version", help="print the version and exit")

    run = commands.add_parser("run", help="run the agent until SIGINT/SIGTERM")
    run.add_argument("--config", type=Path, help="TOML settings file (default: $TELEHEALTH_CONFIG)")

    devstack = commands.add_parser(
        "devstack",
        help="run the development relay, clinic stand-in and coturn on loopback (not for production)",
    )
    devstack.add_argument("--env-file", type=Path, help="also write the agent's settings to this file")
    devstack.add_argument("--open-access", action="store_true", help="do not enforce Access Manager tokens")
    devstack.add_argument(
        "--state-dir",
        type=Path,
        help="keep keys, issued and revoked tokens, history, App Context, consent and audit events here "
        "across restarts (default: a fresh temporary directory, removed at exit)",
    )

    demo = commands.add_parser(
        "demo",
        help="run a whole consultation on the development stack and print each step (exit 0 passed, "
        "1 a step failed)",
    )
    demo.add_argument("--verbose", action="store_true", help="show the agents' logs (INFO); default WARNING")
    demo.add_argument("--json", action="store_true", help="one JSON object per step on stdout")
    demo.add_argument(
        "--step-timeout",
        type=_step_timeout,
        default=10.0,
        metavar="SECONDS",
        help="how long one step may take before the demo fails naming it (default 10; the call step "
        "three times that: it starts the media processes)",
    )
    demo.add_argument(
        "--skip-consent",
        action="store_true",
        help="record no consent for the patient: the clinic refuses check-in (consent: missing) and the "
        "demo exits 1 naming the check-in step; shows how a failed step is reported",
    )

    from devices.cli import add_check_devices_arguments

    check = commands.add_parser(
        "check-devices", help="check the camera, microphone and speaker (exit 0 pass, 1 a device fails)"
    )
    add_check_devices_arguments(check)
    check.add_argument(
        "--config",
        type=Path,
        help="TOML settings: default devices and thresholds (default: $TELEHEALTH_CONFIG)",
    )

    preflight = commands.add_parser(
        "preflight",
        help="check the devices and the network (PubNub origin, TURN, a short media test through TURN) "
        "and say whether a video call can be held (exit 0 video and no device fails, 1 otherwise)",
    )
    preflight.add_argument("--config", type=Path, help="TOML settings file (default: $TELEHEALTH_CONFIG)")
    preflight.add_argument("--json", action="store_true", help="print the report as JSON, nothing else")
    preflight.add_argument(
        "--skip",
        action="append",
        choices=("camera", "microphone", "speaker", "devices"),
        default=[],
        help="leave a device out, or every device ('devices': the network only); repeatable",
    )

    audit = commands.add_parser("audit", help="check the audit trail or show what waits for delivery")
    audit_actions = audit.add_subparsers(dest="audit_action", required=True, metavar="ACTION")
    for name, text in (
        (
            "verify",
            "check the device's audit trail with the device credential of the settings: the keyed hash "
            "chain, its authenticated head and the sink's acknowledgements kept beside it (exit 0 intact, "
            "1 something wrong, named; 2 bad settings or no store; 3 --against-sink found no sink)",
        ),
        (
            "status",
            "check the trail as verify does, then how many records, the last one's position and time, and "
            "how many wait for the audit sink and the channel (exit 1 if the check fails)",
        ),
    ):
        action = audit_actions.add_parser(name, help=text)
        action.add_argument(
            "--state-dir",
            type=_non_empty_path,
            help="the agent's state directory (default: state_dir of the settings)",
        )
        action.add_argument("--config", type=Path, help="TOML settings file (default: $TELEHEALTH_CONFIG)")
        if name == "verify":
            action.add_argument(
                "--against-sink",
                action="store_true",
                help="also ask the audit sink for the highest sequence it holds for this device: a trail "
                "behind it (a whole state directory put back to an older copy) is reported",
            )
    return parser


MAX_STEP_TIMEOUT_SECONDS = 300.0


def _step_timeout(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number of seconds, got {text!r}") from None
    if not 0 < seconds <= MAX_STEP_TIMEOUT_SECONDS:  # also refuses nan and inf
        raise argparse.ArgumentTypeError(
            f"must be above 0 and at most {MAX_STEP_TIMEOUT_SECONDS:g} seconds, got {text!r}"
        )
    return seconds


def _devstack_missing(command: str) -> int:
    print(
        f"telehealth-agent: {command}: the development stack is not installed (it is not part of a "
        "kiosk or cart install). From a clone of the repository: scripts/setup.sh, or "
        ".venv/bin/pip install -e devstack/",
        file=sys.stderr,
    )
    return EXIT_USAGE


def _run_demo(args: argparse.Namespace) -> int:
    try:
        from telehealth_devstack.demo import DemoOptions, run_demo
    except ModuleNotFoundError as exc:
        if exc.name != "telehealth_devstack":
            raise
        return _devstack_missing("demo")

    options = DemoOptions(
        step_timeout_seconds=args.step_timeout, json_lines=args.json, skip_consent=args.skip_consent
    )
    try:
        return run_demo(options, verbose=args.verbose)
    except KeyboardInterrupt:
        print("telehealth-agent: demo: interrupted", file=sys.stderr)
        return EXIT_FAILURE


def _run_agent(config: Path | None) -> int:
    from telehealth_client.agent import Agent, bus_config, run_until_signalled
    from telehealth_client.config import ConfigError, load_settings

    try:
        settings = load_settings(config)
        bus_config(settings)  # refuses to start without the keys it needs
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"telehealth-agent: config: {problem}", file=sys.stderr)
        return EXIT_USAGE
    except ValueError as exc:
        print(f"telehealth-agent: config: {exc}", file=sys.stderr)
        return EXIT_USAGE
    logs.configure(settings.log_level, settings.log_format)

    agent = Agent(settings)
    return asyncio.run(run_until_signalled(agent.start, agent.aclose))


def _check_devices(args: argparse.Namespace) -> int:
    """check-devices with the devices and thresholds of the settings, unless given on the command line."""
    from devices.cli import run_check_devices
    from telehealth_client.config import ConfigError, load_settings

    try:
        settings = load_settings(args.config)
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"telehealth-agent: config: {problem}", file=sys.stderr)
        return EXIT_USAGE
    args.camera = args.camera if args.camera is not None else settings.camera
    args.microphone = args.microphone if args.microphone is not None else settings.microphone
    args.speaker = args.speaker if args.speaker is not None else settings.speaker
    return run_check_devices(args, settings.device_thresholds)


def _run_preflight(args: argparse.Namespace) -> int:
    """The device checks of the settings' devices, then the network; one report, one verdict."""
    from telehealth_client.config import ConfigError, load_settings

    try:
        settings = load_settings(args.config)
        settings.require_secret("device_credential")  # the clinic hands out the TURN credentials
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"telehealth-agent: config: {problem}", file=sys.stderr)
        return EXIT_USAGE
    except ValueError as exc:
        print(f"telehealth-agent: config: {exc}", file=sys.stderr)
        return EXIT_USAGE
    logs.configure("WARNING", settings.log_format)
    try:
        from telehealth_client.preflight import run_preflight

        report = asyncio.run(run_preflight(settings, skip=set(args.skip)))
    except KeyboardInterrupt:
        print("telehealth-agent: preflight: interrupted", file=sys.stderr)
        return EXIT_FAILURE
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print("\n".join(report.lines()))
    return EXIT_OK if report.passed else EXIT_FAILURE


def _run_audit(args: argparse.Namespace) -> int:
    from telehealth_client.audit_cli import run_audit

    return run_audit(args)


def _non_empty_path(text: str) -> Path:
    """A path argument; an empty one would quietly mean the current directory."""
    if not text.strip():
        raise argparse.ArgumentTypeError("must not be empty")
    return Path(text)


def _run_devstack(args: argparse.Namespace) -> int:
    try:
        from telehealth_devstack.serve import run_devstack
    except ModuleNotFoundError as exc:
        if exc.name != "telehealth_devstack":
            raise
        return _devstack_missing("devstack")
    return run_devstack(args.env_file, args.open_access, args.state_dir)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "version":
        print(f"telehealth-agent {__version__}")
        return EXIT_OK
    if args.command == "run":
        return _run_agent(args.config)
    if args.command == "devstack":
        return _run_devstack(args)
    if args.command == "demo":
        return _run_demo(args)
    if args.command == "check-devices":
        return _check_devices(args)
    if args.command == "preflight":
        return _run_preflight(args)
    if args.command == "audit":
        return _run_audit(args)
    return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
