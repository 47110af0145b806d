"""Where the doctor reads an installed kiosk from: the settings file, the credentials directory and
the unit, each given on the command line or else where scripts/install-kiosk.sh puts it.

The service gets its secrets from systemd (``$CREDENTIALS_DIRECTORY``); an operator's shell has
none, so the doctor points ``CREDENTIALS_DIRECTORY`` at the installed credential files and loads
the settings as the service would.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

# Where the installer puts them (kiosk.service names the same paths).
INSTALLED_CONFIG = Path("/etc/telehealth-agent/agent.toml")
INSTALLED_CREDENTIALS = Path("/etc/telehealth-agent/credentials")
INSTALLED_UNIT = Path("/etc/systemd/system/kiosk.service")
# A development checkout's unit (an editable install): beside the package.
REPOSITORY_UNIT = Path(__file__).resolve().parents[2] / "kiosk.service"


@dataclass(frozen=True)
class Inputs:
    """``config`` None: the environment alone; ``credentials`` None: no credentials directory."""

    config: Path | None
    credentials: Path | None
    environ: Mapping[str, str]
    unit: Path | None


def choose_inputs(
    config: Path | None,
    credentials: Path | None,
    unit: Path | None,
    environ: Mapping[str, str],
    *,
    installed_config: Path = INSTALLED_CONFIG,
    installed_credentials: Path = INSTALLED_CREDENTIALS,
    installed_unit: Path = INSTALLED_UNIT,
    repository_unit: Path = REPOSITORY_UNIT,
) -> Inputs:
    """Each of the command line's, else the environment's, else the installed one if it exists."""
    # Here, not above: the command line's parser reads this module's paths for every command.
    from telehealth_client.config import CONFIG_ENV, CREDENTIALS_DIRECTORY_ENV

    if config is None and not environ.get(CONFIG_ENV) and installed_config.exists():
        config = installed_config
    if credentials is None and environ.get(CREDENTIALS_DIRECTORY_ENV):
        credentials = Path(environ[CREDENTIALS_DIRECTORY_ENV])
    elif credentials is None and installed_credentials.exists():
        credentials = installed_credentials
    loaded_from = dict(environ)
    if credentials is not None:
        loaded_from[CREDENTIALS_DIRECTORY_ENV] = str(credentials)
    if unit is None:
        unit = next((path for path in (installed_unit, repository_unit) if path.exists()), None)
    return Inputs(config, credentials, loaded_from, unit)
