"""``check-devices``: run the device checks from a terminal and print what they found.

Exit status: 0 when every checked device passes (warnings included), 1 when
one fails, 2 on a usage error. ``telehealth-agent check-devices`` wires these
two functions into the agent's command line; ``python -m devices.cli`` runs
them alone.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TextIO

from devices.check import run_device_check
from devices.report import (
    DEVICE_KINDS,
    CameraResult,
    DeviceReport,
    MicrophoneResult,
    SpeakerResult,
    StepResult,
)
from devices.sources import DeviceUsageError, parse_audio_device, parse_camera_source
from devices.thresholds import DeviceThresholds

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2


def _argument(check: Callable[[str], object]) -> Callable[[str], str]:
    """An argparse type that validates with ``check`` and keeps the text."""

    def convert(text: str) -> str:
        try:
            check(text)
        except DeviceUsageError as error:
            raise argparse.ArgumentTypeError(error.reason) from error
        return text

    return convert


def add_check_devices_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--camera",
        metavar="SRC",
        type=_argument(parse_camera_source),
        help="/dev/videoN, an index N, a video file or a stream URL (default: the first /dev/video*)",
    )
    parser.add_argument(
        "--microphone",
        metavar="NAME",
        type=_argument(lambda text: parse_audio_device(text, "microphone")),
        help="input device name (or part of it) or index (default: the system default input)",
    )
    parser.add_argument(
        "--speaker",
        metavar="NAME",
        type=_argument(lambda text: parse_audio_device(text, "speaker")),
        help="output device name (or part of it) or index (default: the system default output)",
    )
    parser.add_argument(
        "--speaker-monitor",
        metavar="NAME",
        type=_argument(lambda text: parse_audio_device(text, "speaker-monitor")),
        help="an input that hears the speaker (loopback device, or the microphone) to confirm the tone",
    )
    parser.add_argument(
        "--skip",
        action="append",
        choices=DEVICE_KINDS,
        default=[],
        help="leave a device out; repeatable",
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON, nothing else")
    parser.add_argument("--list", action="store_true", help="list cameras and audio devices, then exit")
    parser.add_argument(
        "--snapshot",
        metavar="PATH",
        type=Path,
        help="save the camera preview as JPEG, mode 0600 (it shows whoever is in front of the camera)",
    )


def run_check_devices(args: argparse.Namespace, thresholds: DeviceThresholds | None = None) -> int:
    # OpenCV and FFmpeg otherwise print their own warnings between our lines; the verdicts say it all.
    os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
    if args.list:
        return _list(args.json)
    on_step = None if args.json else _print_step
    try:
        report = asyncio.run(
            run_device_check(
                args.camera,
                args.microphone,
                args.speaker,
                thresholds,
                on_step=on_step,
                speaker_monitor=args.speaker_monitor,
                skip=tuple(args.skip or ()),
            )
        )
    except DeviceUsageError as error:
        print(f"check-devices: error: --{error.field.replace('_', '-')}: {error.reason}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    if args.snapshot is not None:
        _save_snapshot(report, args.snapshot)
    if args.json:
        print(report.model_dump_json(indent=2))
    else:
        _print_summary(report)
    return EXIT_FAIL if report.status == "fail" else EXIT_OK


def _list(as_json: bool) -> int:
    from devices.listing import list_devices

    found = list_devices()
    if as_json:
        print(found.model_dump_json(indent=2))
        return EXIT_OK
    unavailable = f" (unavailable: {found.audio_error})" if found.audio_error else ""
    _print_section("cameras:", [f"{camera.path}  {camera.name or ''}".rstrip() for camera in found.cameras])
    _print_section(
        "audio inputs:" + unavailable,
        [f"[{d.index}] {d.name}{'  (default)' if d.is_default_input else ''}" for d in found.inputs],
    )
    _print_section(
        "audio outputs:" + unavailable,
        [f"[{d.index}] {d.name}{'  (default)' if d.is_default_output else ''}" for d in found.outputs],
    )
    return EXIT_OK


def _print_section(title: str, rows: list[str]) -> None:
    print(title)
    for row in rows or ["none found"]:
        print(f"  {row}")


def _print_step(step: StepResult, out: TextIO | None = None) -> None:
    stream = out or sys.stdout
    print(
        f"{step.kind:<10} {step.status.upper():<4}  {step.device or '-'}  {_details(step)}".rstrip(),
        file=stream,
    )
    for reason in step.reasons:
        print(f"           - {reason}", file=stream)
    stream.flush()


def _details(step: StepResult) -> str:
    parts: list[str] = []
    if isinstance(step, CameraResult) and step.width is not None:
        parts.append(f"{step.width}x{step.height}")
        if step.fps is not None:
            parts.append(f"{step.fps:.1f} fps")
        parts.append(f"brightness {step.brightness:.0f}")
        parts.append(f"sharpness {step.sharpness:.0f}")
        if step.frozen_ratio is not None:
            parts.append(f"frozen {step.frozen_ratio:.0%}")
    elif isinstance(step, MicrophoneResult) and step.rms_dbfs is not None:
        parts.append(f"rms {step.rms_dbfs:.1f} dBFS")
        parts.append(f"peak {step.peak_dbfs:.1f} dBFS")
        parts.append(f"clipping {step.clipping_ratio:.2%}")
    elif isinstance(step, SpeakerResult) and step.played_frames:
        parts.append(f"{step.tone_hz:.0f} Hz tone")
        if step.heard is not None:
            parts.append(f"{'heard' if step.heard else 'not heard'} on {step.monitor}")
    parts.append(f"({step.duration_s:.2f} s)")
    return "  ".join(parts)


def _print_summary(report: DeviceReport) -> None:
    failing = [
        f"{step.kind}: {step.reasons[0]}" for step in report.steps if step.status != "ok" and step.reasons
    ]
    detail = f" ({'; '.join(failing)})" if failing else ""
    print(f"summary: {report.status.upper()}{detail} in {report.duration_s:.2f} s")


def _save_snapshot(report: DeviceReport, path: Path) -> None:
    jpeg = report.camera.snapshot_jpeg if report.camera is not None else None
    if jpeg is None:
        print("check-devices: no camera snapshot to save", file=sys.stderr)
        return
    try:
        _write_private(path, jpeg)
    except OSError as error:
        print(f"check-devices: cannot save snapshot: {error.strerror}", file=sys.stderr)


def _write_private(path: Path, body: bytes) -> None:
    """``path`` holds ``body``, readable by this user alone: the snapshot shows whoever stands at
    the kiosk. Written to a new 0600 file beside it and renamed over it, so no other user can open
    it at any moment, half-written or not, whatever the umask or the mode of a file it replaces."""
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(body)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="check-devices", description=__doc__.splitlines()[0])
    add_check_devices_arguments(parser)
    return run_check_devices(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
