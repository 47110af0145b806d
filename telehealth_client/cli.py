"""The ``telehealth-agent`` command line.

Exit codes: 0 success, 1 failure at run time, 2 usage or configuration error.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from telehealth_client import __version__, logs

if TYPE_CHECKING:
    pass

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


def _run_demo(args: argparse.Namespace) -> int:
    from telehealth_client.demo import DemoOptions, run_demo

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


def _write_env_file(path: Path, lines: list[str]) -> None:
    # The file holds development keys: readable by its owner only (mkstemp's 0600). It appears
    # complete or not at all, so a script may wait for it to exist and then read it.
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as file:
            file.write("\n".join(lines) + "\n")
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _unwritable_env_file(path: Path) -> str | None:
    """Why ``path`` cannot take the env file, or None: checked before any secret is printed."""
    if path.exists():
        if not path.is_file():
            return "is not a regular file"
        if not os.access(path, os.W_OK):
            return "Permission denied"
    try:
        # The same kind of file the final write makes, then gone: nothing appears before the stack runs.
        tempfile.TemporaryFile(dir=path.parent).close()
    except OSError as exc:
        return exc.strerror or type(exc).__name__
    return None


def _non_empty_path(text: str) -> Path:
    """A path argument; an empty one would quietly mean the current directory."""
    if not text.strip():
        raise argparse.ArgumentTypeError("must not be empty")
    return Path(text)


def _prepare_state_dir(path: Path) -> str | None:
    """Create ``path`` if needed and prove it writable; why not, or None."""
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=path).close()
    except OSError as exc:
        return exc.strerror or type(exc).__name__
    return None


def _devstack_usage_error(option: str, path: Path, reason: str) -> int:
    print(f"telehealth-agent: devstack: {option} {path}: {reason}", file=sys.stderr)
    return EXIT_USAGE


def _run_devstack(env_file: Path | None, open_access: bool, state_dir: Path | None) -> int:
    # Every path is checked before the stack starts and before anything (a secret) is printed.
    if env_file is not None and (reason := _unwritable_env_file(env_file)) is not None:
        return _devstack_usage_error("--env-file", env_file, f"cannot be written: {reason}")
    temporary = state_dir is None
    state = Path(tempfile.mkdtemp(prefix="telehealth-devstack-")) if state_dir is None else state_dir
    try:
        if not temporary and (reason := _prepare_state_dir(state)) is not None:
            return _devstack_usage_error("--state-dir", state, f"cannot be written: {reason}")
        return _serve_devstack(env_file, open_access, state, temporary)
    finally:
        if temporary:
            shutil.rmtree(state, ignore_errors=True)


def _serve_devstack(env_file: Path | None, open_access: bool, state_dir: Path, temporary: bool) -> int:
    from telehealth_client.agent import run_until_signalled
    from telehealth_client.devstack.stack import AUDITOR_USER_ID, DevStack, DevStackKeys

    try:
        keys = DevStackKeys.load_or_create(state_dir / "keys.json")
    except (OSError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else str(exc)
        return _devstack_usage_error("--state-dir", state_dir, f"keys: {reason}")
    logs.configure("INFO", "kv")
    stack = DevStack(enforce_access=not open_access, keys=keys, state_dir=state_dir)

    async def started() -> None:
        await stack.start()
        kiosk = stack.agent_environment()
        lines = [f"{name}={value}" for name, value in kiosk.items()]
        print("# development stack running; settings for a patient kiosk agent:", flush=True)
        print("\n".join(lines), flush=True)
        # Each provider's or nurse's own device credential: it mints tokens only for that user.
        for user_id, user in stack.users.items():
            extra = {k: v for k, v in stack.agent_environment(user_id).items() if kiosk.get(k) != v}
            settings = " ".join(f"{name}={value}" for name, value in extra.items())
            print(
                f"# {user.role} {user_id}'s agent: the settings above with {settings} "
                f"(departmentId {user.department_id})",
                flush=True,
            )
        print(
            f"# auditor {AUDITOR_USER_ID} (GET /api/audit-events, nothing else): "
            f"Authorization: Bearer {stack.keys.auditor_credential}",
            flush=True,
        )
        kept = "temporary, removed at exit" if temporary else "kept across restarts"
        print(f"# state directory: {state_dir} ({kept})", flush=True)
        if env_file is not None:
            await asyncio.to_thread(_write_env_file, env_file, lines)
            print(f"# written to {env_file}", flush=True)

    return asyncio.run(run_until_signalled(started, stack.stop))


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "version":
        print(f"telehealth-agent {__version__}")
        return EXIT_OK
    if args.command == "run":
        return _run_agent(args.config)
    if args.command == "devstack":
        return _run_devstack(args.env_file, args.open_access, args.state_dir)
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
