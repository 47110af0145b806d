"""``telehealth-agent audit verify | status``: the device's audit trail checked as this device.

Both read the settings: the device ID is ``user_id``, the keys come from ``device_credential`` (and
``previous_device_credentials``), or from ``cipher_key`` when no device credential is set. Output
holds counts, positions, sequences and device IDs only, never an event's content.

Exit codes: 0 intact; 1 something is wrong with the trail, named on stdout (``verify``) or stderr
(``status``); 2 bad settings, a missing secret or no store at the path; 3 (``verify
--against-sink``) the local checks passed but the sink could not be asked.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from telehealth_client.config import ConfigError, Settings, load_settings
from telehealth_client.security.audit import (
    AuditStatus,
    AuditStoreError,
    ChainReport,
    DamagedStoreError,
    LegacyChainKeys,
    legacy_store_path,
    read_last,
    read_status,
    store_path,
    verify_chain,
    verify_legacy_chain,
)
from telehealth_client.security.audit_identity import TrailIdentity, trail_identity
from telehealth_client.security.audit_legacy import stored_version
from telehealth_client.security.audit_store import LEGACY_SCHEMA_VERSION
from telehealth_client.security.audit_verify import read_store_status
from telehealth_client.security.clinic_client import ClinicClient, ClinicError

EXIT_OK: Final = 0
EXIT_BROKEN: Final = 1
EXIT_USAGE: Final = 2
EXIT_SINK_UNREACHABLE: Final = 3

_CIPHER_KEYED_NOTE: Final = (
    "note: no device_credential is set, so this trail is keyed by the organization's cipher key: "
    "another device holding it could rewrite the trail"
)


class UsageError(Exception):
    """Settings or paths that keep the command from running (exit 2); the message says which."""


@dataclass(frozen=True)
class Trail:
    state_dir: Path
    settings: Settings
    identity: TrailIdentity

    def legacy_keys(self, path: Path) -> LegacyChainKeys:
        if self.identity.legacy_keys is None:
            raise UsageError(f"cipher_key: not set; {path} is a version 2 store, keyed by the cipher key")
        return self.identity.legacy_keys


def run_audit(args: argparse.Namespace) -> int:
    try:
        trail = _load(args.config, args.state_dir)
        if args.audit_action == "verify":
            return _verify(trail, against_sink=args.against_sink)
        return _status(trail)
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"telehealth-agent: config: {problem}", file=sys.stderr)
        return EXIT_USAGE
    except (UsageError, ValueError) as exc:
        print(f"telehealth-agent: config: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except DamagedStoreError as exc:
        print(f"telehealth-agent: audit: {exc}", file=sys.stderr)
        return EXIT_BROKEN
    except AuditStoreError as exc:
        print(f"telehealth-agent: audit: {exc}", file=sys.stderr)
        return EXIT_USAGE


def _load(config: Path | None, state_dir: Path | None) -> Trail:
    settings = load_settings(config)
    directory = state_dir or settings.state_dir
    current = store_path(directory)
    if not current.exists() and not legacy_store_path(directory).exists():
        raise AuditStoreError(f"{current}: no audit store there")
    if current.exists() and not current.is_file():
        raise AuditStoreError(f"{current}: not a file")
    return Trail(directory, settings, trail_identity(settings))


def _is_legacy(path: Path) -> bool:
    return stored_version(path) == LEGACY_SCHEMA_VERSION


# -- verify -----------------------------------------------------------------------------------------


def _verify(trail: Trail, *, against_sink: bool) -> int:
    current, aside = store_path(trail.state_dir), legacy_store_path(trail.state_dir)
    code = EXIT_OK
    if aside.exists():
        report = verify_legacy_chain(aside, trail.legacy_keys(aside))
        if report.ok:
            print(f"version 2 store set aside ({aside.name}) ok: {report.records} records")
        else:
            print(f"version 2 store set aside ({aside.name}) broken: {report.reason}")
            code = EXIT_BROKEN
    if not current.exists():
        return code
    if _is_legacy(current):
        report = verify_legacy_chain(current, trail.legacy_keys(current))
        if not report.ok:
            print(f"audit chain broken: {report.reason}")
            return EXIT_BROKEN
        print(
            f"audit chain ok: {report.records} records (a version 2 store, keyed by the organization's "
            "cipher key; the agent sets it aside and begins a device-keyed one at its next start)"
        )
        return code
    report = verify_chain(trail.state_dir, trail.identity.keys, trail.identity.device_id)
    if not trail.identity.device_keyed:
        print(_CIPHER_KEYED_NOTE)
    if not report.ok:
        print(f"audit chain broken: {report.reason}")
        return EXIT_BROKEN
    print(f"audit chain ok: {_describe(report)}")
    if against_sink:
        return max(code, _compare_with_sink(trail, report))
    return code


def _describe(report: ChainReport) -> str:
    acknowledged = (
        f"the highest sequence the sink acknowledged is {report.acknowledged}"
        if report.acknowledged
        else "nothing acknowledged by the sink yet"
    )
    records = f"{report.records} record{'' if report.records == 1 else 's'}"
    return (
        f"{records}, {_sequences(report.records, report.base)} of device {report.device_id}; {acknowledged}"
    )


def _sequences(count: int, base: int) -> str:
    """``sequences 1-3``, ``sequence 4``, or ``the next is sequence 1`` for an empty chain."""
    if count == 0:
        return f"the next is sequence {base + 1}"
    if count == 1:
        return f"sequence {base + 1}"
    return f"sequences {base + 1}-{base + count}"


def _compare_with_sink(trail: Trail, report: ChainReport) -> int:
    """The sink's head against the trail: a whole state directory put back shows only here."""
    credential = trail.settings.require_secret("device_credential").get_secret_value()
    device_id = trail.identity.device_id

    async def ask() -> int:
        clinic = ClinicClient(
            trail.settings.clinic_url, credential, timeout_seconds=trail.settings.request_timeout_seconds
        )
        try:
            head = await clinic.audit_head(device_id)
        finally:
            await clinic.aclose()
        return head.highest_sequence

    try:
        held = asyncio.run(ask())
    except (ClinicError, OSError) as exc:
        print(f"the audit sink could not be asked ({exc}): only the local checks were made")
        return EXIT_SINK_UNREACHABLE
    if held > report.last_sequence:
        print(
            f"audit trail behind the sink: the sink holds sequence {held} of device {device_id}, the trail "
            f"ends at {report.last_sequence}: the state directory (or the store) was put back to an older "
            "copy, or records were removed"
        )
        return EXIT_BROKEN
    print(
        f"audit sink agrees: it holds device {device_id}'s sequences up to {held} with no gap below, "
        f"and the trail ends at {report.last_sequence}"
    )
    return EXIT_OK


# -- status -----------------------------------------------------------------------------------------


def _status(trail: Trail) -> int:
    current, aside = store_path(trail.state_dir), legacy_store_path(trail.state_dir)
    lines: list[str] = []
    if current.exists():
        if _is_legacy(current):
            _checked(current, verify_legacy_chain(current, trail.legacy_keys(current)))
            lines += _counts(read_store_status(current, LEGACY_SCHEMA_VERSION))
            lines.append("(a version 2 store: the agent sets it aside at its next start)")
        else:
            report = verify_chain(trail.state_dir, trail.identity.keys, trail.identity.device_id)
            _checked(current, report)
            status, last = read_status(trail.state_dir), read_last(trail.state_dir)
            lines.append(f"device: {trail.identity.device_id}")
            lines += _counts(status)
            lines[1] = f"records: {status.records}, {_sequences(status.records, status.base)}"
            lines.insert(
                2,
                "last record: none"
                if last is None
                else f"last record: position {last.position}, recorded at {last.timestamp or 'unknown'}",
            )
            lines.append(f"highest sequence acknowledged by the sink: {report.acknowledged or 'none yet'}")
    if aside.exists():
        _checked(aside, verify_legacy_chain(aside, trail.legacy_keys(aside)))
        legacy = read_store_status(aside, LEGACY_SCHEMA_VERSION)
        lines += [f"version 2 store set aside ({aside.name}): {line}" for line in _counts(legacy)]
    print("\n".join(lines))
    return EXIT_OK


def _checked(path: Path, report: ChainReport) -> None:
    """Counts of a trail that fails its check could hide what was erased: say so instead."""
    if not report.ok:
        raise DamagedStoreError(
            path,
            f"{report.reason}; what waits for delivery cannot be told from it "
            "(`telehealth-agent audit verify` names the problem)",
        )


def _counts(status: AuditStatus) -> list[str]:
    return [
        f"records: {status.records}",
        f"waiting for the audit sink: {status.awaiting_sink}",
        f"waiting for the audit channel: {status.awaiting_channel}",
        f"refused by the audit sink: {status.refused_sink}",
        f"refused by the audit channel: {status.refused_channel}",
    ]
