"""Check 1: the settings load and are complete (no placeholder left from packaging/agent.toml).

The settings are loaded twice: without the secrets (``base``: this check, and the checks that
need no secret) and with them (``settings``: the checks that talk to PubNub, the clinic and the
local API). A secret's problems are the credentials check's to tell, with their fixes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from telehealth_client.config import (
    CONFIG_ENV,
    CREDENTIALS_DIRECTORY_ENV,
    ENV_PREFIX,
    SECRET_FIELDS,
    ConfigError,
    Settings,
    load_settings,
)
from telehealth_client.doctor.inputs import Inputs
from telehealth_client.doctor.report import Result, failed, passed, plural
from telehealth_client.settings_check import placeholders

NAME = "settings"


@dataclass(frozen=True)
class Loaded:
    """``settings``: everything, secrets included (None unless all of it loaded); ``base``: the
    settings without any secret (None when even those do not load); ``result``: this check's."""

    settings: Settings | None
    base: Settings | None
    result: Result
    secret_problems: tuple[str, ...]  # what the load with the secrets found beyond the base load
    config: Path | None


def incomplete_settings(settings: Settings) -> list[tuple[str, str]]:
    """(setting, why) for each setting that loads but cannot work: an ID this role needs still at
    its placeholder, a clinic URL on a ``.invalid`` host. What ``run`` refuses, decided in one
    place (telehealth_client/settings_check.py), so that the doctor never demands more or less."""
    return [(name, f"still the placeholder {getattr(settings, name)!r}") for name in placeholders(settings)]


def where_to_set(settings: Settings, name: str, config: Path | None) -> str:
    """How to change ``name``: where its value came from, or the settings file."""
    origin = settings.source_of(name)
    if origin.startswith("environment "):
        return f"set {origin.removeprefix('environment ')}"
    if config is not None:
        return f"set {name} in {config}"
    return f"set {name} in the settings file (--config) or {ENV_PREFIX}{name.upper()}"


def without_secrets(environ: Mapping[str, str]) -> dict[str, str]:
    """``environ`` with no secret in it or pointed at (variables, ``_FILE``s, the credentials)."""
    names = {f"{ENV_PREFIX}{name.upper()}" for name in SECRET_FIELDS}
    names |= {f"{name}_FILE" for name in names}
    names.add(CREDENTIALS_DIRECTORY_ENV)
    return {key: value for key, value in environ.items() if key not in names}


def load(inputs: Inputs) -> Loaded:
    """The settings as the service would load them, and this check's result."""
    config = inputs.config
    if config is None and inputs.environ.get(CONFIG_ENV):
        config = Path(inputs.environ[CONFIG_ENV])
    source = str(config) if config is not None else "the environment (no settings file)"
    try:
        base = load_settings(config, without_secrets(inputs.environ))
    except ConfigError as exc:
        result = failed(
            NAME, f"{source}: {plural(len(exc.problems), 'problem')} the agent refuses", exc.problems
        )
        return Loaded(None, None, result, (), config)
    settings: Settings | None
    secret_problems: tuple[str, ...] = ()
    try:
        settings = load_settings(config, inputs.environ)
    except ConfigError as exc:
        settings, secret_problems = None, tuple(exc.problems)
    incomplete = incomplete_settings(base)
    if incomplete:
        details = [f"{name}: {why}: {where_to_set(base, name, config)}" for name, why in incomplete]
        result = failed(NAME, f"{source}: {plural(len(details), 'setting')} left to fill in", details)
    else:
        result = passed(NAME, f"{source}: complete ({base.role} {base.user_id}, clinic {base.clinic_url})")
    return Loaded(settings, base, result, secret_problems, config)
