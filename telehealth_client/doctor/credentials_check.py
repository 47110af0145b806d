"""Check 2: every secret the agent needs is present, usable, and readable only by its owner.

Each secret is looked for where the agent looks (config.py, same precedence): ``TELEHEALTH_<NAME>``,
then ``TELEHEALTH_<NAME>_FILE``, then ``$CREDENTIALS_DIRECTORY/<name>``. A file is judged as the
agent judges it (``read_secret_file``: a regular file no other user can read or write, not too
big), and also by its owner; one still holding scripts/install-kiosk.sh's placeholder is named as
such. A secret's value is read into memory only, never shown.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from telehealth_client.config import (
    CREDENTIALS_DIRECTORY_ENV,
    ENV_PREFIX,
    LIST_SECRET_FIELDS,
    SECRET_FIELDS,
    Settings,
    clean_secret,
    clean_secret_lines,
    read_secret_file,
)
from telehealth_client.doctor.inputs import Inputs
from telehealth_client.doctor.report import Result, failed, passed, plural, warned

NAME = "credentials"
PLACEHOLDER_MARK = "FILL-IN"  # how scripts/install-kiosk.sh's placeholder files begin
SERVICE_USER = "telehealth"  # kiosk.service's User=
# What goes in each (the installer's list, and the optional ones).
WHAT = {
    "publish_key": "the PubNub publish key of the keyset",
    "subscribe_key": "the PubNub subscribe key of the keyset",
    "secret_key": "the PubNub secret key",
    "cipher_key": "the AES-256 cipher key of every PHI channel (at least 16 characters)",
    "previous_cipher_keys": "the cipher keys rotated out, one a line",
    "device_credential": "this device's credential for the clinic backend",
    "previous_device_credentials": "the device credentials rotated out, one a line",
    "api_token": "the local API's bearer token (the installer generates one)",
}


def required_secrets(settings: Settings | None) -> tuple[str, ...]:
    """The secrets an agent with these settings needs (None: settings that did not load, all of
    them). One function, so that a check the agent itself makes at start can replace it."""
    names = ["publish_key", "subscribe_key", "cipher_key", "device_credential"]
    if settings is None or settings.api_enabled:
        names.append("api_token")
    return tuple(names)


@dataclass(frozen=True)
class Source:
    """Where a secret comes from: a variable holding it (``path`` None), or a file."""

    name: str
    where: str  # the variable's name or the file's path
    path: Path | None


def find_source(name: str, environ: Mapping[str, str]) -> Source | None:
    """Where the agent would take ``name`` from, or None."""
    variable = f"{ENV_PREFIX}{name.upper()}"
    if variable in environ:
        return Source(name, variable, None)
    if f"{variable}_FILE" in environ:
        given = environ[f"{variable}_FILE"]
        return Source(name, f"{variable}_FILE", Path(given) if given.strip() else None)
    directory = environ.get(CREDENTIALS_DIRECTORY_ENV)
    if directory and os.path.lexists(Path(directory) / name):
        path = Path(directory) / name
        return Source(name, str(path), path)
    return None


def allowed_owners() -> set[int]:
    """Root (systemd reads credentials as root), whoever runs this, and the service's user."""
    owners = {0, os.geteuid()}
    with contextlib.suppress(KeyError):  # not installed here
        owners.add(pwd.getpwnam(SERVICE_USER).pw_uid)
    return owners


def inspect(source: Source, environ: Mapping[str, str], owners: set[int]) -> str | None:
    """What is wrong with this secret, with the fix; None when it is usable."""
    name = source.name
    if source.path is None and source.where.endswith("_FILE"):
        return f"{name}: {source.where} is empty: give the file's path or unset it"
    if source.path is None:
        text = environ[source.where]
        where = source.where
    else:
        if os.path.lexists(source.path) and not os.access(source.path, os.R_OK):
            return f"{name}: cannot read {source.path}: run the doctor as root (sudo)"
        try:
            text = read_secret_file(source.path)
            owner = source.path.stat().st_uid
        except ValueError as exc:
            return f"{name}: {exc}"
        except OSError as exc:  # gone since it was read
            return f"{name}: cannot read {source.path}: {exc.strerror or type(exc).__name__}"
        if owner not in owners and source.path.is_symlink():  # chown would change the link's target
            return (
                f"{name}: {source.path} is a symbolic link to a file of user ID {owner}: replace the "
                "link with a regular file holding the secret, root's, mode 0600"
            )
        if owner not in owners:
            return f"{name}: {source.path} belongs to user ID {owner}: run: chown root:root {source.path}"
        where = str(source.path)
    if PLACEHOLDER_MARK in text:
        return f"{name}: still the installer's placeholder: put {WHAT[name]} in {where}, on one line"
    try:
        if name in LIST_SECRET_FIELDS:
            clean_secret_lines(name, text)
        else:
            clean_secret(name, text)
    except ValueError as exc:
        return f"{name}: {where}: {exc}"
    return None


def directory_problem(directory: Path) -> str | None:
    """The credentials directory missing, unreadable to us, or writable by other users."""
    try:
        info = directory.stat()
    except OSError as exc:
        return f"the credentials directory {directory}: {exc.strerror or exc}"
    if not stat.S_ISDIR(info.st_mode):
        return f"{directory} is not a directory"
    if not os.access(directory, os.R_OK | os.X_OK):
        return f"cannot read the credentials directory {directory}: run the doctor as root (sudo)"
    if info.st_mode & 0o022:
        mode = stat.S_IMODE(info.st_mode)
        return f"{directory} can be written by other users (mode {mode:04o}): run: chmod 700 {directory}"
    return None


def check_credentials(inputs: Inputs, base: Settings | None, load_problems: tuple[str, ...]) -> Result:
    """Check 2. ``base``: the settings without secrets (which secrets are needed);
    ``load_problems``: what loading them with the secrets found (told if nothing else is)."""
    directory = inputs.credentials
    if directory is not None and (problem := directory_problem(directory)) is not None:
        return failed(NAME, problem)
    environ, owners = inputs.environ, allowed_owners()
    problems: list[str] = []
    notes: list[str] = []
    required = required_secrets(base)
    present = 0
    for name in SECRET_FIELDS:
        source = find_source(name, environ)
        if source is None:
            if name in required:
                problems.append(_missing(name, directory))
            continue
        present += 1
        problem = inspect(source, environ, owners)
        if problem is not None:
            problems.append(problem)
        elif source.path is None:
            notes.append(
                f"{name}: from the environment ({source.where}): the service takes secrets only as "
                "files (LoadCredential=); fine for development"
            )
        if name == "secret_key":
            notes.append(f"secret_key: set ({source.where}): only the development clinic uses it; remove it")
    if not problems and load_problems:
        problems.extend(load_problems)
    where = str(directory) if directory is not None else "no credentials directory"
    if problems:
        return failed(NAME, f"{plural(len(problems), 'problem')} ({where})", problems)
    summary = f"{plural(present, 'secret')} present, each readable only by its owner ({where})"
    return warned(NAME, summary, notes) if notes else passed(NAME, summary)


def _missing(name: str, directory: Path | None) -> str:
    if directory is not None:
        return f"{name}: missing: put {WHAT[name]} in {directory / name} (root's, mode 0600)"
    variable = f"{ENV_PREFIX}{name.upper()}_FILE"
    return (
        f"{name}: not set: put {WHAT[name]} in a file only root can read and give its path as "
        f"{variable} (or --credentials DIR)"
    )
