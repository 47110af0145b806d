"""What the files of an audit trail, taken together, say about its history (the agent and the CLI agree).

The trail's files: ``audit/audit.sqlite3`` (the device-keyed store, version 3, or a version 2 one
not yet upgraded), ``audit/audit-v2.sqlite3`` (a version 2 store set aside at the upgrade) and
``audit-acknowledged.json`` (the highest sequence the sink acknowledged, MACed). The sink's head
says the same from outside.

The rules: a version 2 store is taken as the device's own only by a device that never ran the
device-keyed trail (no version 3 store, nothing acknowledged in the file, nothing of it at the
sink); afterwards a version 2 store at ``audit.sqlite3`` is a rollback, and a set-aside one counts
only if the version 3 store's authenticated origin recorded setting it aside. A store that is gone
while the file (or the sink) shows acknowledged sequences was deleted or moved: the agent begins a
new one that records it follows a removed store, and ``audit verify`` notes it on every run.

Messages name files, sequences and device IDs only.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Final

from telehealth_client.audit.origin import SetAside
from telehealth_client.audit.store import DamagedStoreError, StoreKind

_ROLLED_BACK: Final = (
    "the device-keyed store was replaced by an older copy or by a forged version 2 store (a rollback)"
)
ROLLBACK_ADVICE: Final = (
    "put back the device-keyed store (audit.sqlite3) this device wrote; "
    "`telehealth-agent audit verify --against-sink` tells what the sink holds"
)
UNRECORDED_ADVICE: Final = (
    "move it out of audit/ (keep it for investigation), then start again; it is never delivered"
)


def _ran(file_name: str, acknowledged: int) -> str:
    if acknowledged:
        return (
            f"{file_name} shows this device's device-keyed trail had sequences up to {acknowledged} "
            "acknowledged by the sink"
        )
    return f"{file_name} shows this device ran the device-keyed trail (nothing acknowledged by the sink yet)"


def version_2_after_acknowledged(acknowledged: int, file_name: str) -> str:
    return f"a version 2 store, but {_ran(file_name, acknowledged)}: {_ROLLED_BACK}"


def version_2_beside_set_aside(aside_name: str) -> str:
    return (
        f"a version 2 store, and {aside_name} (set aside when the device-keyed store began) is there "
        f"too: {_ROLLED_BACK}"
    )


def version_2_behind_sink(held: int, device_id: str) -> str:
    return (
        f"a version 2 store, but the sink holds sequence {held} of device {device_id}'s device-keyed "
        f"trail: {_ROLLED_BACK}, or user_id is not this device's ID"
    )


def store_gone(store_name: str, acknowledged: int, file_name: str) -> str:
    shows = (
        f"shows sequences up to {acknowledged} were acknowledged"
        if acknowledged
        else "shows this device ran the device-keyed trail"
    )
    return (
        f"the store {store_name} is gone but {file_name} {shows}: it was deleted or moved (what it had "
        "not delivered is lost unless it is put back)"
    )


def store_gone_behind_sink(store_name: str, held: int, device_id: str) -> str:
    return (
        f"the store {store_name} is gone but the sink holds sequence {held} of device {device_id}: it "
        "was deleted or moved (what it had not delivered is lost unless it is put back)"
    )


def unrecorded_set_aside(why: str) -> str:
    return (
        f"a version 2 store that no device-keyed store of this device set aside ({why}): planted, or "
        "left from a removed store (anyone with the organization's cipher key can write one); it is "
        "not delivered"
    )


def follows_removed_note(base: int) -> str:
    showed = (
        f"the acknowledgement file or the sink showed sequences up to {base}"
        if base
        else "the acknowledgement file showed this device ran the device-keyed trail"
    )
    return (
        f"this store was begun at sequence {base + 1} after an earlier store of this device was "
        f"deleted or moved aside ({showed}): "
        f"what that store recorded after sequence {base} and had not delivered is lost unless it is "
        f"found; `telehealth-agent audit verify --against-sink` tells whether the sink holds every "
        f"sequence up to {base}"
    )


def set_aside_missing_note(aside: SetAside) -> str:
    return (
        f"{aside.file_name}, the version 2 store set aside when this store began ({aside.records} "
        "records), is no longer there: it was moved or deleted, and what waited in it is not "
        "delivered from here"
    )


@dataclass(frozen=True)
class StartPlan:
    """What the agent does before it opens (or begins) the device-keyed store.

    ``set_aside``: move the version 2 store at ``audit.sqlite3`` aside first; ``adopt_set_aside``:
    deliver ``audit-v2.sqlite3`` and record it in the new store's origin (an upgrade, or one cut
    short before the new store was written); ``follows_removed``: a new store begun now follows a
    removed one.
    """

    set_aside: bool = False
    adopt_set_aside: bool = False
    follows_removed: bool = False


def plan_start(
    current: Path,
    kind: StoreKind,
    aside: Path,
    acknowledged: int | None,
    acknowledgement_file: str,
    held: int | None,
    device_id: str,
) -> StartPlan:
    """The plan for the files found: ``kind`` of ``current``, whether ``aside`` exists, the
    ``acknowledged`` sequence the file keeps (None without one: the agent writes it, 0, as soon
    as the device-keyed store exists, so its presence proves this device ran it) and what the
    sink ``held`` (None: not asked or no answer). DamagedStoreError naming the file where
    starting would bury a rollback or deliver a version 2 store that is not the device's."""
    ran_device_keyed = acknowledged is not None or (held or 0) > 0
    if kind == "version 2":
        if acknowledged is not None:
            raise DamagedStoreError(
                current, version_2_after_acknowledged(acknowledged, acknowledgement_file), ROLLBACK_ADVICE
            )
        if held:
            raise DamagedStoreError(current, version_2_behind_sink(held, device_id), ROLLBACK_ADVICE)
        if aside.exists():
            raise DamagedStoreError(current, version_2_beside_set_aside(aside.name), ROLLBACK_ADVICE)
        return StartPlan(set_aside=True, adopt_set_aside=True)
    if kind == "none":
        if ran_device_keyed and aside.exists():
            raise DamagedStoreError(
                aside,
                unrecorded_set_aside("the device-keyed store that would record it is gone"),
                UNRECORDED_ADVICE,
            )
        return StartPlan(adopt_set_aside=aside.exists(), follows_removed=ran_device_keyed)
    return StartPlan()


def set_aside_present(aside: Path, recorded: SetAside | None) -> bool:
    """Whether ``aside`` is there, for an existing device-keyed store whose origin ``recorded``
    what it set aside (the caller matches the file against it). DamagedStoreError if a version 2
    file is there that the store never set aside."""
    present = aside.exists()
    if present and recorded is None:
        raise DamagedStoreError(
            aside, unrecorded_set_aside("this device's store records none"), UNRECORDED_ADVICE
        )
    return present
