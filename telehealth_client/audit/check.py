"""The whole trail of a state directory checked as this device, read-only, for ``telehealth-agent audit``.

``check_trail`` looks at every file of the trail together (``audit_layout``): the device-keyed
store and the version 2 store it recorded setting aside, a version 2 store not yet upgraded, the
acknowledgement file, or their absence. It returns what ``verify`` prints, one ``Finding`` per
file checked (a problem, or a summary of what verified) and notes that hold however often it is
run (a store that follows a removed one, a set-aside store no longer there). The sink is not
asked here (``audit.cli`` does, for ``--against-sink``). Nothing printed holds a record's content.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from telehealth_client.audit.acks import (
    AcknowledgementFileError,
    acknowledgement_path,
    read_acknowledged_if_present,
)
from telehealth_client.audit.keys import ChainKeys, LegacyChainKeys
from telehealth_client.audit.layout import (
    follows_removed_note,
    set_aside_missing_note,
    store_gone,
    unrecorded_set_aside,
    version_2_after_acknowledged,
    version_2_beside_set_aside,
)
from telehealth_client.audit.legacy import legacy_store_path, set_aside_problem
from telehealth_client.audit.store import AuditStoreError, StoreKind, store_kind, store_path
from telehealth_client.audit.verify import ChainReport, verify_legacy_store, verify_store

CHAIN = "audit chain"


@dataclass(frozen=True)
class Finding:
    """One file checked: ``problem`` (None when it verified) or ``summary`` of what verified."""

    label: str
    path: Path
    problem: str | None
    summary: str = ""


@dataclass(frozen=True)
class TrailCheck:
    """``kind``: what ``audit.sqlite3`` is; ``report``: the device-keyed store's, once it verified."""

    kind: StoreKind
    findings: list[Finding]
    notes: list[str] = field(default_factory=list)
    report: ChainReport | None = None

    @property
    def ok(self) -> bool:
        return all(finding.problem is None for finding in self.findings)

    @property
    def first_problem(self) -> Finding | None:
        return next((finding for finding in self.findings if finding.problem is not None), None)


LegacyKeys = Callable[[Path], LegacyChainKeys]


def set_aside_label(path: Path) -> str:
    return f"version 2 store set aside ({path.name})"


def check_trail(state_dir: Path, keys: ChainKeys, device_id: str, legacy_keys: LegacyKeys) -> TrailCheck:
    """``legacy_keys(path)``: the cipher keys for the version 2 store at ``path`` (or raise).
    AuditStoreError when there is no trail at all (no store, nothing set aside, no
    acknowledgement file)."""
    current = store_path(state_dir)
    kind = store_kind(current)
    if kind != "version 2" and current.exists():
        # An empty file too ("none" to the agent, which would begin a store in it): no trail to pass.
        return _check_device_keyed(state_dir, keys, device_id, legacy_keys)
    acknowledgements = acknowledgement_path(state_dir)
    acknowledged: int | None
    try:
        acknowledged, file_problem = read_acknowledged_if_present(acknowledgements, keys, device_id), None
    except AcknowledgementFileError as exc:
        acknowledged, file_problem = None, str(exc)
    if kind == "version 2":
        return _check_version_2(state_dir, acknowledged, file_problem, legacy_keys)
    aside = legacy_store_path(state_dir)
    if file_problem is not None:
        return TrailCheck(
            kind, [Finding(CHAIN, current, f"the store {current.name} is gone; {file_problem}")]
        )
    if acknowledged is not None:
        gone = store_gone(current.name, acknowledged, acknowledgements.name)
        return TrailCheck(kind, [Finding(CHAIN, current, gone)])
    if not aside.exists():
        raise AuditStoreError(f"{current}: no audit store there")
    # An upgrade cut short between setting the version 2 store aside and beginning the new one.
    note = (
        f"there is no device-keyed store ({current.name}) yet: the agent begins one at its next start "
        f"and takes {aside.name} as the version 2 store it set aside (as on a device that never ran "
        "this version)"
    )
    return TrailCheck(kind, [_version_2_finding(aside, legacy_keys(aside))], [note])


def _check_device_keyed(
    state_dir: Path, keys: ChainKeys, device_id: str, legacy_keys: LegacyKeys
) -> TrailCheck:
    current, aside = store_path(state_dir), legacy_store_path(state_dir)
    report = verify_store(current, keys, device_id, acknowledgement_path(state_dir))
    if not report.ok or report.origin is None:
        return TrailCheck("store", [Finding(CHAIN, current, report.reason)])
    findings: list[Finding] = []
    notes: list[str] = []
    recorded = report.origin.set_aside
    if recorded is None:
        if aside.exists():
            planted = unrecorded_set_aside("this device's store records none")
            findings.append(Finding(f"version 2 store ({aside.name})", aside, planted))
    elif aside.exists():
        legacy = verify_legacy_store(aside, legacy_keys(aside))
        problem = (
            set_aside_problem(recorded, legacy.records, legacy.last_hash or "")
            if legacy.ok
            else legacy.reason
        )
        findings.append(Finding(set_aside_label(aside), aside, problem, f"{legacy.records} records"))
    else:
        notes.append(set_aside_missing_note(recorded))
    findings.append(Finding(CHAIN, current, None, describe(report)))
    if report.origin.follows_removed:
        notes.append(follows_removed_note(report.base))
    return TrailCheck("store", findings, notes, report)


def _check_version_2(
    state_dir: Path, acknowledged: int | None, file_problem: str | None, legacy_keys: LegacyKeys
) -> TrailCheck:
    current, aside = store_path(state_dir), legacy_store_path(state_dir)
    legacy = verify_legacy_store(current, legacy_keys(current))
    problem = legacy.reason if not legacy.ok else file_problem
    if problem is None and acknowledged is not None:
        problem = version_2_after_acknowledged(acknowledged, acknowledgement_path(state_dir).name)
    if problem is None and aside.exists():
        problem = version_2_beside_set_aside(aside.name)
    summary = (
        f"{legacy.records} records (a version 2 store, keyed by the organization's cipher key; the agent "
        "sets it aside and begins a device-keyed one at its next start)"
    )
    return TrailCheck("version 2", [Finding(CHAIN, current, problem, summary)])


def _version_2_finding(path: Path, keys: LegacyChainKeys) -> Finding:
    report = verify_legacy_store(path, keys)
    return Finding(
        set_aside_label(path), path, report.reason if not report.ok else None, f"{report.records} records"
    )


def describe(report: ChainReport) -> str:
    acknowledged = (
        f"the highest sequence the sink acknowledged is {report.acknowledged}"
        if report.acknowledged
        else "nothing acknowledged by the sink yet"
    )
    records = f"{report.records} record{'' if report.records == 1 else 's'}"
    pruned = (
        f" ({sequences(report.pruned, report.base)} delivered and pruned: the chain is verified from where "
        "they ended)"
        if report.pruned
        else ""
    )
    return (
        f"{records}, {sequences(report.records, report.base)} of device {report.device_id}{pruned}; "
        f"{acknowledged}"
    )


def sequences(count: int, base: int) -> str:
    """``sequences 1-3``, ``sequence 4``, or ``the next is sequence 1`` for an empty chain."""
    if count == 0:
        return f"the next is sequence {base + 1}"
    if count == 1:
        return f"sequence {base + 1}"
    return f"sequences {base + 1}-{base + count}"
