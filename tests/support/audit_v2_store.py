"""A version 2 audit store exactly as the agent before the device-keyed trail wrote it.

Written here from that version's schema and key derivation (HKDF of the organization's cipher key,
salt ``telehealth-client audit chain``, purpose ``audit chain hmac v2``), not with the code under
test, so an upgrade is tested against what older agents really left on disk.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import shutil
import sqlite3
from pathlib import Path

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from telehealth_client.protocol import messages

GENESIS = hashlib.sha256(b"telehealth-client audit chain v2").hexdigest()
SCHEMA = """
BEGIN;
CREATE TABLE records (
    position INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    event TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL
);
CREATE TRIGGER records_no_update BEFORE UPDATE ON records
BEGIN SELECT RAISE(ABORT, 'audit records are append-only'); END;
CREATE TRIGGER records_no_delete BEFORE DELETE ON records
BEGIN SELECT RAISE(ABORT, 'audit records are append-only'); END;
CREATE TABLE head (
    singleton INTEGER PRIMARY KEY CHECK (singleton = 1),
    records INTEGER NOT NULL,
    hash TEXT NOT NULL
);
INSERT INTO head (singleton, records, hash) VALUES (1, 0, '{genesis}');
CREATE TABLE settled (
    position INTEGER NOT NULL,
    target TEXT NOT NULL CHECK (target IN ('sink', 'channel')),
    refused_status INTEGER,
    mac TEXT NOT NULL,
    PRIMARY KEY (position, target)
) WITHOUT ROWID;
PRAGMA user_version = 2;
COMMIT;
""".replace("{genesis}", GENESIS)


def _key(cipher_key: str) -> bytes:
    hkdf = HKDF(
        algorithm=hashes.SHA256(),
        length=32,
        salt=b"telehealth-client audit chain",
        info=b"audit chain hmac v2",
    )
    return hkdf.derive(cipher_key.encode())


def _mac(key: bytes, text: str) -> str:
    return hmac.new(key, text.encode(), hashlib.sha256).hexdigest()


def version_2_text(event: messages.AuditEvent) -> str:
    """The event as version 2 stored it: the wire form of then, without deviceId or sequence."""
    wire = {
        name: value for name, value in messages.encode(event).items() if name not in ("deviceId", "sequence")
    }
    return json.dumps(wire, sort_keys=True, separators=(",", ":"))


def write_version_2_store(
    path: Path, cipher_key: str, events: list[messages.AuditEvent], settled: dict[int, tuple[str, ...]]
) -> None:
    """``events`` recorded in order; ``settled[position]``: the targets that acknowledged it.

    Left as a killed agent leaves it: the last transactions still in the WAL beside the file.
    """
    key = _key(cipher_key)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    scratch = path.with_name("writing.sqlite3")
    db = sqlite3.connect(str(scratch), isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA wal_autocheckpoint=0")  # everything stays in the WAL, as after a crash
        db.executescript(SCHEMA)
        prev = GENESIS
        for position, event in enumerate(events, start=1):
            text = version_2_text(event)
            digest = _mac(key, f"{prev}\n{position}\n{text}")
            db.execute("INSERT INTO records VALUES (?, ?, ?, ?, ?)", (position, event.id, text, prev, digest))
            db.execute("UPDATE head SET records = ?, hash = ?", (position, digest))
            for target in settled.get(position, ()):
                mac = _mac(key, f"settled\n{digest}\n{target}\n")
                db.execute("INSERT INTO settled VALUES (?, ?, NULL, ?)", (position, target, mac))
            prev = digest
        # Copied while the writer is still open: the file and its WAL as a killed agent left them.
        shutil.copyfile(scratch, path)
        shutil.copyfile(scratch.with_name(scratch.name + "-wal"), path.with_name(path.name + "-wal"))
    finally:
        db.close()
    for leftover in (
        scratch,
        scratch.with_name(scratch.name + "-wal"),
        scratch.with_name(scratch.name + "-shm"),
    ):
        leftover.unlink(missing_ok=True)
    path.chmod(0o600)
