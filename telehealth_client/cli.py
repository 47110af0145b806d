"""The ``telehealth-agent`` command line.

Exit codes: 0 success, 1 failure at run time, 2 usage or configuration error (``run``: settings
missing, invalid or still the installer's placeholders, each named on its own line).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import sys
from collections.abc import Sequence
from importlib.metadata import entry_points
from pathlib import Path
from typing import NoReturn, Protocol

from telehealth_client import __version__, logs, signal_guard

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

    config = commands.add_parser(
        "config",
        help="print the effective settings and where each came from (secrets only as set or unset; "
        "exit 2 naming each problem when they are invalid)",
    )
    config.add_argument("--config", type=Path, help="TOML settings file (default: $TELEHEALTH_CONFIG)")

    for name, command in sorted(_added_commands().items()):
        if isinstance(command, str):
            # Any arguments taken (main): the answer is how to install it, whatever was asked of it.
            missing = commands.add_parser(name, help=f"(not installed) {DEVSTACK_COMMANDS.get(name, '')}")
            missing.set_defaults(missing_reason=command)
        else:
            added = commands.add_parser(name, help=command.help)
            command.add_arguments(added)
            added.set_defaults(added_command=command)

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

    from telehealth_client.doctor.command import add_arguments as add_doctor_arguments

    doctor = commands.add_parser(
        "doctor",
        help="check an installed kiosk end to end, one line per check with the fix when it fails: settings, "
        "credentials, PubNub, the clinic, TURN, camera, microphone, the local API, the clock, disk, the unit "
        "(exit 0 when none fails, 1 otherwise)",
    )
    add_doctor_arguments(doctor)

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


class AddedCommand(Protocol):
    """A command another distribution adds (entry point group ``telehealth_agent.commands``)."""

    help: str

    def add_arguments(self, parser: argparse.ArgumentParser) -> None: ...

    def run(self, args: argparse.Namespace) -> int: ...


COMMAND_GROUP = "telehealth_agent.commands"
# The development stack's commands: named here only so that an install without it (a kiosk's)
# says how to get them instead of "invalid choice".
DEVSTACK_COMMANDS = {
    "demo": "run a whole consultation on the development stack and print each step",
    "devstack": "run the development relay, clinic stand-in and coturn on loopback (not for production)",
}


def _added_commands() -> dict[str, AddedCommand | str]:
    """The commands other installed distributions add; for one that cannot be loaded (or a
    development stack command without the stack), why."""
    found: dict[str, AddedCommand | str] = dict.fromkeys(DEVSTACK_COMMANDS, "not installed")
    for entry in entry_points(group=COMMAND_GROUP):
        try:
            found[entry.name] = entry.load()
        except ImportError as exc:  # its distribution's metadata is there, its code is not
            found[entry.name] = f"cannot be loaded ({type(exc).__name__}: {exc})"
    return found


def _not_installed(command: str, reason: str) -> int:
    print(
        f"telehealth-agent: {command}: the development stack is not installed ({reason}; it is not "
        "part of a kiosk or cart install). From a clone of the repository: scripts/setup.sh, or "
        ".venv/bin/pip install -e devstack/",
        file=sys.stderr,
    )
    return EXIT_USAGE


def _config_refused(exc: Exception) -> int:
    """Print what is wrong with the settings (each problem of a ConfigError on its own line)."""
    from telehealth_client.config import ConfigError

    problems = exc.problems if isinstance(exc, ConfigError) else [str(exc)]
    for problem in problems:
        print(f"telehealth-agent: config: {problem}", file=sys.stderr)
    return EXIT_USAGE


def _run_agent(config: Path | None) -> int:
    """Refuse settings that cannot work (exit 2, one line each, every one found in one round,
    never READY); else serve until a signal: READY once the local API listens, the network brought
    up and retried behind it. A signal before the start (signal_guard) stops it there: exit 0."""
    from telehealth_client import systemd
    from telehealth_client.agent import Agent, run_until_signalled
    from telehealth_client.config import ConfigError
    from telehealth_client.settings_check import load_complete

    try:
        settings = load_complete(config)
    except ConfigError as exc:
        return _config_refused(exc)
    logs.configure(settings.log_level, settings.log_format)
    early = signal_guard.first()
    if early is not None:
        logging.getLogger(__name__).info("signal=%s before the start: stopping", early.name)
        systemd.stopping()
        return _exit_now(EXIT_OK)

    agent = Agent(settings, serve_api=True)
    return _exit_now(asyncio.run(run_until_signalled(agent.serve, agent.aclose, failure=agent.failure)))


def _exit_now(code: int) -> NoReturn:
    """Exit with ``code`` once the logs are out, skipping the interpreter's teardown.

    The agent has stopped and everything durable is on disk; tearing down the ~1000 modules a
    running agent has loaded took 0.3-2.5 s, during which systemd still saw the service alive.
    """
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a closed pipe: nothing more to tell
            stream.flush()
    os._exit(code)


def _show_config(config: Path | None) -> int:
    """One line per setting: its value and its origin; a secret only as set (and from where) or unset."""
    from telehealth_client.config import SECRET_FIELDS, ConfigError, load_settings

    try:
        settings = load_settings(config)
    except ConfigError as exc:
        return _config_refused(exc)
    for name, value in settings.redacted().items():
        origin = settings.source_of(name)
        if name not in SECRET_FIELDS:
            print(f"{name} = {json.dumps(value)}  ({origin})")
        elif origin == "default":  # no source gave it
            print(f"{name}: unset")
        else:
            print(f"{name}: set (from {origin})")
    return EXIT_OK


def _check_devices(args: argparse.Namespace) -> int:
    """check-devices with the devices and thresholds of the settings, unless given on the command line."""
    from devices.cli import run_check_devices
    from telehealth_client.config import ConfigError, load_settings

    try:
        settings = load_settings(args.config)
    except ConfigError as exc:
        return _config_refused(exc)
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
    except (ConfigError, ValueError) as exc:
        return _config_refused(exc)
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
    from telehealth_client.audit.cli import run_audit

    return run_audit(args)


def _non_empty_path(text: str) -> Path:
    """A path argument; an empty one would quietly mean the current directory."""
    if not text.strip():
        raise argparse.ArgumentTypeError("must not be empty")
    return Path(text)


def main(argv: Sequence[str] | None = None) -> int:
    """The command line; a reader that closes the pipe early (``config | head``) ends it quietly."""
    signal_guard.install()  # a no-op again under ``python -m``; the console script starts here
    try:
        return _dispatch(argv)
    except BrokenPipeError:
        # What is left to print has nowhere to go: point stdout at /dev/null, so that Python's
        # final flush does not print a traceback either.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return EXIT_FAILURE


def _dispatch(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if args.command != "run":
        signal_guard.release()  # only run stops cleanly by itself: the others die of a signal as usual
    if getattr(args, "missing_reason", None) is not None:
        return _not_installed(args.command, args.missing_reason)
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    if args.command == "version":
        print(f"telehealth-agent {__version__}")
        return EXIT_OK
    if args.command == "run":
        return _run_agent(args.config)
    if args.command == "config":
        return _show_config(args.config)
    added: AddedCommand | None = getattr(args, "added_command", None)
    if added is not None:
        return added.run(args)
    if args.command == "check-devices":
        return _check_devices(args)
    if args.command == "preflight":
        return _run_preflight(args)
    if args.command == "audit":
        return _run_audit(args)
    if args.command == "doctor":
        from telehealth_client.doctor.command import run_doctor

        return run_doctor(args)
    return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
