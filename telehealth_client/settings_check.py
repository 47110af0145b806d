"""Settings that load but cannot do the role's work, found before ``telehealth-agent run`` starts.

A kiosk without the credential it checks patients in with, a cart without a publish key, the
installer's placeholder IDs or clinic URL: each would start, say READY and look healthy until the
first patient. ``problems`` names each one, why it matters and the fix, one line each; ``run``
prints them and exits 2 without READY (the unit's ``RestartPreventExitStatus=2``: systemd does
not loop on them). The installer's placeholder secret files are refused by the loader already
(``config.PLACEHOLDER_MARK``).

What each role needs: the subscribe and cipher keys and the publish key (every role publishes:
a kiosk its check-ins, a cart its queue updates and joins), the local API's token while the API is
on, its own user ID, its organization's ID (it names the audit channel), a cart's department (its
standing token, waiting room and emergencies), and the device credential (the clinic grants every
token to it, and it keys the audit trail).

Development mode (``development_mode``): the PubNub origin is a loopback address over plain HTTP,
which only the development relay is. There the device credential may be missing (the relay without
Access Manager needs no token) and the placeholder organization and department IDs stand, as the
development stack's and the tests' agents run.

``load_complete`` is what ``run`` uses: the load's problems and these in one round, so that an
operator fixing the installer's placeholder credentials is not told about the placeholder IDs only
on the next try.

Public API: ``problems(settings, *, serve_api=True) -> list[str]``; ``placeholders(settings)``
(the one list of settings ``run`` and ``doctor`` both demand); ``load_complete(config, environ)``;
``development_mode(settings)``.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Final
from urllib.parse import urlsplit

from telehealth_client.config import (
    CREDENTIALS_DIRECTORY_ENV,
    ENV_PREFIX,
    SECRET_FIELDS,
    ConfigError,
    MissingSecretError,
    Role,
    Settings,
    load_settings,
)

# The defaults, which scripts/install-kiosk.sh's packaging/agent.toml also holds until filled in.
PLACEHOLDER_IDS: Final = {
    "user_id": "kiosk-unconfigured",
    "organization_id": "org-unconfigured",
    "department_id": "dept-unconfigured",
}
_ID_WHAT: Final = {
    "user_id": "this agent's own PubNub user ID",
    "organization_id": "your organization's ID (it names the audit channel)",
    "department_id": "the department whose waiting room and emergencies this cart follows",
}
_ROLE_NAME: Final = {
    Role.PATIENT: "a kiosk",
    Role.PROVIDER: "a provider's cart",
    Role.NURSE: "a nurse's cart",
}
_LOOPBACK_NAMES: Final = frozenset({"localhost"})


def development_mode(settings: Settings) -> bool:
    """The origin is the development relay: a loopback address, plain HTTP."""
    if settings.ssl:
        return False
    host = urlsplit(f"http://{settings.origin}").hostname or ""  # the settings checked its form
    if host in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def problems(settings: Settings, *, serve_api: bool = True) -> list[str]:
    """One line per setting that keeps the agent from its work: the setting, why, the fix."""
    role = _ROLE_NAME[settings.role]
    development = development_mode(settings)
    needed = {
        "subscribe_key": "every agent subscribes with it",
        "cipher_key": "every PHI channel is end-to-end encrypted with it",
        "publish_key": f"{role} publishes with it"
        + (" (its check-ins)" if settings.role is Role.PATIENT else " (queue updates, joins, chat)"),
    }
    if serve_api and settings.api_enabled:
        needed["api_token"] = "the local API is on (api_enabled = false turns it off)"
    if not development:
        needed["device_credential"] = f"{role} gets every Access Manager token from the clinic with it" + (
            ", so no patient could check in" if settings.role is Role.PATIENT else ""
        )
    found = [_missing(settings, name, why) for name, why in needed.items()]
    found += [
        _placeholder_clinic(settings) if name == "clinic_url" else _placeholder_id(settings, name)
        for name in placeholders(settings)
    ]
    return [problem for problem in found if problem is not None]


def placeholders(settings: Settings) -> list[str]:
    """The settings this role needs that still hold the installer's placeholder (IDs, clinic_url).

    A kiosk's department_id is not among them: a kiosk gets the department with each check-in.
    """
    development = development_mode(settings)
    ids = ["user_id"] if development else ["user_id", "organization_id"]
    if settings.role is not Role.PATIENT and not development:
        ids.append("department_id")
    names = [name for name in ids if getattr(settings, name) == PLACEHOLDER_IDS[name]]
    if _placeholder_clinic(settings) is not None:
        names.append("clinic_url")
    return names


def load_complete(
    config: Path | None, environ: Mapping[str, str] | None = None, *, serve_api: bool = True
) -> Settings:
    """The settings ``run`` starts with, or ConfigError naming every problem found in one round:
    what the load refuses, and what ``problems`` finds in the settings that do load."""
    env = os.environ if environ is None else environ
    try:
        settings = load_settings(config, env)
    except ConfigError as exc:
        raise ConfigError(exc.problems + _beyond(config, env, exc.problems, serve_api)) from None
    found = problems(settings, serve_api=serve_api)
    if found:
        raise ConfigError(found)
    return settings


def _setting_named(problem: str) -> str:
    """The setting a problem line begins with (``cipher_key (credential ...): ...``)."""
    match = re.match(r"[a-z_]+", problem)
    return match.group(0) if match else ""


def _beyond(
    config: Path | None, environ: Mapping[str, str], refused: list[str], serve_api: bool
) -> list[str]:
    """``problems`` of the settings loaded without the secrets the load refused, leaving out the
    settings already named; nothing when even that load fails (its problems are told already)."""
    named = {_setting_named(problem) for problem in refused}
    try:
        partial = load_settings(config, _without_secrets(environ, named & set(SECRET_FIELDS)))
    except ConfigError:
        return []
    # Missing secrets are still looked for where the service looks (the credentials directory).
    partial._credentials_directory = environ.get(CREDENTIALS_DIRECTORY_ENV)
    found = problems(partial, serve_api=serve_api)
    return [problem for problem in found if _setting_named(problem) not in named]


def _without_secrets(environ: Mapping[str, str], names: set[str]) -> dict[str, str]:
    """``environ`` without the secrets ``names``; the others still found where they were (those
    of the credentials directory then through ``_FILE`` variables, since the directory goes)."""
    variables = {f"{ENV_PREFIX}{name.upper()}" for name in names}
    dropped = variables | {f"{variable}_FILE" for variable in variables}
    kept = {key: value for key, value in environ.items() if key not in dropped}
    directory = kept.pop(CREDENTIALS_DIRECTORY_ENV, None) if names else None
    if directory:
        for name in SECRET_FIELDS:
            variable = f"{ENV_PREFIX}{name.upper()}"
            path = Path(directory) / name
            given = variable in kept or f"{variable}_FILE" in kept
            if name not in names and not given and os.path.lexists(path):
                kept[f"{variable}_FILE"] = str(path)
    return kept


def _missing(settings: Settings, name: str, why: str) -> str | None:
    try:
        settings.require_secret(name)
    except MissingSecretError as exc:
        return f"{exc}; {why}"
    return None


def _placeholder_id(settings: Settings, name: str) -> str | None:
    value = getattr(settings, name)
    if value != PLACEHOLDER_IDS[name]:
        return None
    origin = settings.source_of(name)
    where = "left unset" if origin == "default" else f"from {origin}"
    return (
        f"{name}: is still the placeholder {value!r} ({where}); set it to {_ID_WHAT[name]} "
        f'in the settings file ({name} = "...") or TELEHEALTH_{name.upper()}'
    )


def _placeholder_clinic(settings: Settings) -> str | None:
    host = urlsplit(settings.clinic_url).hostname or ""
    if not (host == "invalid" or host.endswith(".invalid")):
        return None
    return (
        f"clinic_url: {settings.clinic_url} is the installer's placeholder (a .invalid host never "
        "resolves); set it to your clinic backend's https:// URL in the settings file or "
        "TELEHEALTH_CLINIC_URL"
    )
