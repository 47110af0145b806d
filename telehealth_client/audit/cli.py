"""``telehealth-agent audit verify | status``: the device's audit trail checked as this device.

Both read the settings: the device ID is ``user_id``, the keys come from ``device_credential`` (and
``previous_device_credentials``), or from ``cipher_key`` when no device credential is set. Output
holds counts, positions, sequences and device IDs only, never an event's content.

Every file of the trail is checked together (``audit_check``): a store gone while the
acknowledgement file shows acknowledged sequences, a version 2 store where the device-keyed one
was, or a version 2 store the device-keyed one never set aside is a broken trail. Notes (a store
begun after a removed one, a set-aside store no longer there) are printed on every run.

Exit codes: 0 intact (notes allowed); 1 something is wrong with the trail, named on stdout
(``verify``) or stderr (``status``); 2 bad settings, a missing secret or no trail at the path (no
store, nothing set aside, no acknowledgement file); 3 (``verify --against-sink``) the local checks
passed but the sink could not be asked.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Final

from telehealth_client.audit.check import TrailCheck, check_trail, sequences, set_aside_label
from telehealth_client.audit.identity import TrailIdentity, trail_identity
from telehealth_client.audit.layout import store_gone_behind_sink, version_2_behind_sink
from telehealth_client.audit.store import LEGACY_SCHEMA_VERSION
from telehealth_client.audit.trail import (
    AuditStatus,
    AuditStoreError,
    DamagedStoreError,
    LegacyChainKeys,
    legacy_store_path,
    read_last,
    read_status,
    store_path,
)
from telehealth_client.audit.verify import read_store_backlog, read_store_status
from telehealth_client.config import ConfigError, Settings, load_settings
from telehealth_client.outbound import Outbound
from telehealth_client.protocol.messages import format_time
from telehealth_client.security.clinic_client import ClinicClient, ClinicError

EXIT_OK: Final = 0
EXIT_BROKEN: Final = 1
EXIT_USAGE: Final = 2
EXIT_SINK_UNREACHABLE: Final = 3
MEGABYTE: Final = 1024 * 1024

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
    if current.exists() and not current.is_file():
        raise AuditStoreError(f"{current}: not a file")
    return Trail(directory, settings, trail_identity(settings))


def _check(trail: Trail) -> TrailCheck:
    """Every file of the trail checked as this device; AuditStoreError if there is none at all."""
    identity = trail.identity
    return check_trail(trail.state_dir, identity.keys, identity.device_id, trail.legacy_keys)


# -- verify -----------------------------------------------------------------------------------------


def _verify(trail: Trail, *, against_sink: bool) -> int:
    check = _check(trail)
    if check.kind == "store" and not trail.identity.device_keyed:
        print(_CIPHER_KEYED_NOTE)
    for finding in check.findings:
        if finding.problem is None:
            print(f"{finding.label} ok: {finding.summary}")
        else:
            print(f"{finding.label} broken: {finding.problem}")
    for note in check.notes:
        print(f"note: {note}")
    if not check.ok:
        return EXIT_BROKEN
    if against_sink:
        return _compare_with_sink(trail, check)
    return EXIT_OK


def _ask_sink(trail: Trail) -> int:
    """The highest sequence the sink holds for this device (ClinicError, OSError if not asked)."""
    credential = trail.settings.require_secret("device_credential").get_secret_value()

    async def ask() -> int:
        clinic = ClinicClient(
            trail.settings.clinic_url,
            credential,
            timeout_seconds=trail.settings.request_timeout_seconds,
            outbound=Outbound.from_settings(trail.settings),
        )
        try:
            head = await clinic.audit_head(trail.identity.device_id)
        finally:
            await clinic.aclose()
        return head.highest_sequence

    return asyncio.run(ask())


def _compare_with_sink(trail: Trail, check: TrailCheck) -> int:
    """The sink's head against the trail: a whole state directory put back shows only here."""
    device_id = trail.identity.device_id
    try:
        held = _ask_sink(trail)
    except (ClinicError, OSError) as exc:
        print(f"the audit sink could not be asked ({exc}): only the local checks were made")
        return EXIT_SINK_UNREACHABLE
    report = check.report
    if report is None:
        # No device-keyed store: the sink must hold nothing of one either.
        if held > 0:
            current = store_path(trail.state_dir)
            problem = (
                f"{current.name}: {version_2_behind_sink(held, device_id)}"
                if check.kind == "version 2"
                else store_gone_behind_sink(current.name, held, device_id)
            )
            print(f"audit trail behind the sink: {problem}")
            return EXIT_BROKEN
        print(
            f"audit sink agrees: it holds nothing of device {device_id}'s device-keyed trail, as for a "
            "device that has not run this version yet"
        )
        return EXIT_OK
    if report.unanchored and held > report.base:
        print(
            f"audit trail begun without the sink's head: the sink holds sequence {held} of device "
            f"{device_id}; the agent's next start that reaches it places the trail's "
            f"{report.records} records after it (nothing of it was delivered)"
        )
        return EXIT_OK
    if held > report.last_sequence:
        print(
            f"audit trail behind the sink: the sink holds sequence {held} of device {device_id}, the trail "
            f"ends at {report.last_sequence}: the state directory (or the store) was put back to an older "
            "copy, or records were removed"
        )
        return EXIT_BROKEN
    follows_removed = report.origin is not None and report.origin.follows_removed
    if follows_removed and held < report.base:
        print(
            f"audit sink short of where this store began: the sink holds device {device_id}'s sequences "
            f"with no gap only up to {held}, and this store began after sequence {report.base} (it follows "
            f"a removed store): sequence {held + 1} is not at the sink (refused by the sink, or lost with "
            "the removed store)"
        )
        return EXIT_BROKEN
    print(
        f"audit sink agrees: it holds device {device_id}'s sequences up to {held} with no gap below, "
        f"and the trail ends at {report.last_sequence}"
        + (
            f"; it holds every sequence up to {report.base}, where this store began after a removed one "
            "(only what that store never delivered is missing)"
            if follows_removed
            else ""
        )
    )
    return EXIT_OK


# -- status -----------------------------------------------------------------------------------------


def _status(trail: Trail) -> int:
    check = _check(trail)
    problem = check.first_problem
    if problem is not None:
        # Counts of a trail that fails its check could hide what was erased: say so instead.
        raise DamagedStoreError(
            problem.path,
            f"{problem.problem}; what waits for delivery cannot be told from it "
            "(`telehealth-agent audit verify` names the problem)",
        )
    current, aside = store_path(trail.state_dir), legacy_store_path(trail.state_dir)
    lines: list[str] = []
    if check.kind == "version 2":
        lines += _counts(read_store_status(current, LEGACY_SCHEMA_VERSION))
        lines.append("(a version 2 store: the agent sets it aside at its next start)")
    elif check.report is not None:
        status, last = read_status(trail.state_dir), read_last(trail.state_dir)
        lines.append(f"device: {trail.identity.device_id}")
        lines += _counts(status)
        lines[1] = f"records: {status.records}, {sequences(status.records, status.base)}"
        lines.insert(
            2,
            "last record: none"
            if last is None
            else f"last record: position {last.position}, recorded at {last.timestamp or 'unknown'}",
        )
        if status.pruned:
            pruned = sequences(status.pruned, status.base)
            lines.insert(2, f"pruned (delivered to the sink, past the retention): {pruned}")
        lines.append(f"highest sequence acknowledged by the sink: {check.report.acknowledged or 'none yet'}")
        lines += _backlog_warning(trail)
    if any(finding.path == aside for finding in check.findings):
        legacy = read_store_status(aside, LEGACY_SCHEMA_VERSION)
        lines += [f"{set_aside_label(aside)}: {line}" for line in _counts(legacy)]
    lines += [f"note: {note}" for note in check.notes]
    print("\n".join(lines))
    return EXIT_OK


def _backlog_warning(trail: Trail) -> list[str]:
    """What the agent's retention warns about, from the files: a backlog over the limit, or one
    older than the retention (the sink out of reach for that long)."""
    backlog = read_store_backlog(store_path(trail.state_dir))
    settings, lines = trail.settings, []
    if backlog.bytes > settings.undelivered_limit_mb * MEGABYTE:
        lines.append(
            f"warning: {backlog.records} records ({backlog.bytes / MEGABYTE:.1f} MB) the audit sink has "
            f"not acknowledged, over undelivered_limit_mb ({settings.undelivered_limit_mb}): they are kept, "
            "never deleted undelivered; check that the agent reaches the clinic's audit sink"
        )
    cutoff = datetime.now(UTC) - timedelta(days=settings.retention_days)
    if backlog.oldest is not None and backlog.oldest < cutoff:
        lines.append(
            f"warning: the audit sink has not acknowledged records since {format_time(backlog.oldest)}, over "
            f"retention_days ({settings.retention_days}) ago: {backlog.records} wait"
        )
    return lines


def _counts(status: AuditStatus) -> list[str]:
    return [
        f"records: {status.records}",
        f"waiting for the audit sink: {status.awaiting_sink}",
        f"waiting for the audit channel: {status.awaiting_channel}",
        f"refused by the audit sink: {status.refused_sink}",
        f"refused by the audit channel: {status.refused_channel}",
    ]
