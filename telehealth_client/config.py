"""Settings: environment variables ``TELEHEALTH_*``, a TOML file, and secrets from files.

Precedence, highest first: explicit keyword arguments, environment variables, secret
files, the TOML file, defaults. Secrets (keys, credentials, tokens) are read only from
the environment or from files: ``TELEHEALTH_<NAME>_FILE=/path`` or, under systemd,
``$CREDENTIALS_DIRECTORY/<name>`` (``LoadCredential=<name>:/etc/...``). A secret in the
TOML file is refused, since config files are often world-readable. Secrets are held as
``SecretStr`` and never printed.
"""

from __future__ import annotations

import json
import os
import tomllib
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from devices.sources import DeviceUsageError, parse_audio_device, parse_camera_source
from devices.thresholds import DeviceThresholds
from telehealth_client.protocol.channels import InvalidIdError, validate_id

ENV_PREFIX = "TELEHEALTH_"
CONFIG_ENV = f"{ENV_PREFIX}CONFIG"
CREDENTIALS_DIRECTORY_ENV = "CREDENTIALS_DIRECTORY"

# Secret fields. Their values come from the environment or from files, never the TOML file.
SECRET_FIELDS = (
    "publish_key",
    "subscribe_key",
    "secret_key",
    "cipher_key",
    "previous_cipher_keys",
    "device_credential",
    "api_token",
)


class Role(StrEnum):
    PATIENT = "patient"
    PROVIDER = "provider"
    NURSE = "nurse"


def _valid_id(value: str) -> str:
    try:
        return validate_id(value)
    except InvalidIdError as exc:
        raise ValueError(exc.reason) from None


ValidId = Annotated[str, AfterValidator(_valid_id)]


def _device_reason(parse: Callable[[], object]) -> None:
    try:
        parse()
    except DeviceUsageError as exc:
        raise ValueError(exc.reason) from None


class ConfigError(Exception):
    """Settings that cannot start the agent; ``problems`` holds one line per problem."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


class Settings(BaseSettings):
    """Everything the agent can be told. README.md lists each with its variable and default."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        extra="forbid",
        case_sensitive=False,
        hide_input_in_errors=True,
        validate_default=True,
    )

    # Who this agent is.
    role: Role = Field(default=Role.PATIENT, description="patient (kiosk), provider or nurse")
    user_id: ValidId = Field(default="kiosk-unconfigured", description="PubNub user ID of this agent")
    organization_id: ValidId = Field(
        default="org-unconfigured", description="organization, names the audit channel"
    )
    department_id: ValidId = Field(
        default="dept-unconfigured", description="department for queues, presence and emergencies"
    )

    # PubNub.
    origin: str = Field(default="ps.pndsn.com", description="PubNub origin host[:port]")
    ssl: bool = Field(default=True, description="TLS to the origin; off only for the local relay")
    publish_key: SecretStr | None = Field(default=None, description="PubNub publish key (secret)")
    subscribe_key: SecretStr | None = Field(default=None, description="PubNub subscribe key (secret)")
    secret_key: SecretStr | None = Field(
        default=None, description="PubNub secret key; only the development clinic uses it"
    )
    cipher_key: SecretStr | None = Field(default=None, description="AES-256 cipher key for all PHI channels")
    previous_cipher_keys: list[SecretStr] = Field(
        default_factory=list, description="older cipher keys still accepted for decryption (rotation)"
    )
    presence_timeout_seconds: int = Field(default=120, ge=20, le=300, description="PubNub presence timeout")
    reconnect_min_seconds: float = Field(default=0.5, gt=0, le=60, description="first reconnect back-off")
    reconnect_max_seconds: float = Field(default=30.0, gt=0, le=600, description="longest reconnect back-off")
    request_timeout_seconds: float = Field(default=10.0, gt=0, le=120, description="non-subscribe requests")

    # The clinic backend (token server, TURN credentials, audit sink).
    clinic_url: str = Field(default="http://127.0.0.1:8480", description="base URL of the clinic backend")
    device_credential: SecretStr | None = Field(
        default=None, description="this kiosk's bearer credential for the clinic backend (secret)"
    )

    # Devices (check-devices and the pre-consultation check).
    camera: str | None = Field(
        default=None,
        description="camera: /dev/videoN, an index, a file or a URL; default the first /dev/video*",
    )
    microphone: str | None = Field(default=None, description="input device name (or part) or index")
    speaker: str | None = Field(default=None, description="output device name (or part) or index")
    device_thresholds: DeviceThresholds = Field(
        default_factory=DeviceThresholds, description="pass/warn/fail limits of the device checks"
    )

    # Media.
    relay_only: bool = Field(default=True, description="media only through TURN (ICE policy 'relay')")

    # Local HTTP API.
    api_host: str = Field(default="127.0.0.1", description="local API address (loopback only)")
    api_port: int = Field(default=8470, ge=0, le=65535, description="local API port; 0 picks a free one")
    api_socket: Path | None = Field(
        default=None, description="serve the local API on this unix socket instead"
    )
    api_token: SecretStr | None = Field(default=None, description="bearer token for the local API (secret)")

    # Process.
    state_dir: Path = Field(
        default=Path("/var/lib/telehealth-agent"), description="durable outboxes (chat, audit)"
    )
    log_level: str = Field(default="INFO", description="DEBUG, INFO, WARNING or ERROR")
    log_format: str = Field(default="kv", description="'kv' (key=value) or 'json'")

    @field_validator("origin")
    @classmethod
    def _origin_is_host(cls, value: str) -> str:
        if not value or "/" in value or " " in value:
            raise ValueError("must be host or host:port, without scheme or path")
        return value

    @field_validator(*(name for name in SECRET_FIELDS if name != "previous_cipher_keys"))
    @classmethod
    def _secret_not_blank(cls, value: SecretStr | None) -> SecretStr | None:
        # An empty key would silently mean "no encryption" or "no credential".
        if value is not None and not value.get_secret_value().strip():
            raise ValueError("must not be empty")
        return value

    @field_validator("camera")
    @classmethod
    def _camera_source(cls, value: str | None) -> str | None:
        if value is not None:
            _device_reason(lambda: parse_camera_source(value))
        return value

    @field_validator("microphone", "speaker")
    @classmethod
    def _audio_device(cls, value: str | None) -> str | None:
        if value is not None:
            _device_reason(lambda: parse_audio_device(value, "device"))
        return value

    @field_validator("clinic_url")
    @classmethod
    def _clinic_url_is_http(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/")

    @field_validator("api_host")
    @classmethod
    def _api_on_loopback(cls, value: str) -> str:
        # The API can start and stop calls: it must never be reachable from the network.
        if value not in {"127.0.0.1", "::1", "localhost"}:
            raise ValueError("must be a loopback address (127.0.0.1, ::1 or localhost)")
        return value

    @field_validator("log_level")
    @classmethod
    def _known_level(cls, value: str) -> str:
        upper = value.upper()
        if upper not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
            raise ValueError("must be DEBUG, INFO, WARNING or ERROR")
        return upper

    @field_validator("log_format")
    @classmethod
    def _known_format(cls, value: str) -> str:
        if value not in {"kv", "json"}:
            raise ValueError("must be 'kv' or 'json'")
        return value

    @field_validator("previous_cipher_keys", mode="before")
    @classmethod
    def _split_key_lines(cls, value: Any) -> Any:
        # A file or variable holds one key per line; JSON lists come through as lists.
        if isinstance(value, str):
            return [line.strip() for line in value.splitlines() if line.strip()]
        return value

    @model_validator(mode="after")
    def _backoff_ordered(self) -> Settings:
        if self.reconnect_max_seconds < self.reconnect_min_seconds:
            raise ValueError("reconnect_max_seconds must not be below reconnect_min_seconds")
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        environ = _ENVIRON.get()
        return (
            init_settings,
            _EnvironSource(settings_cls, environ),
            _SecretFileSource(settings_cls, environ),
            _TomlSource(settings_cls, _CONFIG_FILE.get()),
        )

    def redacted(self) -> dict[str, Any]:
        """The settings as printable data: secrets show only whether they are set."""
        data: dict[str, Any] = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if name in SECRET_FIELDS:
                data[name] = "<set>" if value else "<unset>"
            elif isinstance(value, BaseModel):
                data[name] = value.model_dump()
            elif isinstance(value, (Path, StrEnum)):
                data[name] = str(value)
            else:
                data[name] = value
        return data


# The file and environment a load reads, passed to the sources without global state.
_CONFIG_FILE: ContextVar[Path | None] = ContextVar("telehealth_config_file", default=None)
_ENVIRON: ContextVar[Mapping[str, str]] = ContextVar("telehealth_environ", default=os.environ)


# Settings given in the environment as JSON (in the TOML file they are tables).
_JSON_FIELDS = frozenset({"device_thresholds"})


def _env_name(field: str) -> str:
    return f"{ENV_PREFIX}{field.upper()}"


class _EnvironSource(PydanticBaseSettingsSource):
    """``TELEHEALTH_<FIELD>`` variables; list fields accept JSON lists or one item per line."""

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str]) -> None:
        super().__init__(settings_cls)
        self._environ = environ

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return self._environ.get(_env_name(field_name)), field_name, False

    def __call__(self) -> dict[str, Any]:
        values: dict[str, Any] = {}
        problems: list[str] = []
        for name in self.settings_cls.model_fields:
            raw = self._environ.get(_env_name(name))
            if raw is None:
                continue
            structured = name in _JSON_FIELDS or (
                name == "previous_cipher_keys" and raw.lstrip().startswith("[")
            )
            if not structured:
                values[name] = raw
                continue
            try:
                values[name] = json.loads(raw)
            except json.JSONDecodeError as exc:
                problems.append(f"{name} ({_env_name(name)}): not valid JSON: {exc.msg}")
        if problems:
            raise ConfigError(problems)
        return values


class _SecretFileSource(PydanticBaseSettingsSource):
    """Secrets from ``TELEHEALTH_<NAME>_FILE`` or ``$CREDENTIALS_DIRECTORY/<name>``."""

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str]) -> None:
        super().__init__(settings_cls)
        self._environ = environ

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        values: dict[str, Any] = {}
        problems: list[str] = []
        credentials_dir = self._environ.get(CREDENTIALS_DIRECTORY_ENV)
        for name in SECRET_FIELDS:
            explicit = self._environ.get(f"{_env_name(name)}_FILE")
            if explicit:
                path, origin = Path(explicit), f"{_env_name(name)}_FILE"
            elif credentials_dir and (Path(credentials_dir) / name).is_file():
                path, origin = Path(credentials_dir) / name, f"credential {name}"
            else:
                continue
            try:
                text = path.read_text(encoding="utf-8")
            except OSError as exc:
                problems.append(f"{origin}: cannot read the secret file: {exc.strerror or exc}")
                continue
            except UnicodeDecodeError:
                problems.append(f"{origin}: the secret file is not UTF-8 text")
                continue
            if not text.strip():
                problems.append(f"{origin}: the secret file is empty")
                continue
            values[name] = text if name == "previous_cipher_keys" else text.strip()
        if problems:
            raise ConfigError(problems)
        return values


class _TomlSource(PydanticBaseSettingsSource):
    """The TOML file: top-level keys named like the settings. Secrets are refused here."""

    def __init__(self, settings_cls: type[BaseSettings], path: Path | None) -> None:
        super().__init__(settings_cls)
        self._path = path

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        if self._path is None:
            return {}
        try:
            data = tomllib.loads(self._path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError([f"config file {self._path}: cannot read: {exc.strerror or exc}"]) from exc
        except UnicodeDecodeError:
            raise ConfigError([f"config file {self._path}: not UTF-8 text"]) from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError([f"config file {self._path}: not valid TOML: {exc}"]) from exc
        problems = [
            f"{key} (config file): secrets are not read from the config file; "
            f"use {_env_name(key)}_FILE or the systemd credential '{key}'"
            for key in data
            if key in SECRET_FIELDS
        ]
        problems += [
            f"{key} (config file): unknown setting"
            for key in data
            if key not in self.settings_cls.model_fields
        ]
        if problems:
            raise ConfigError(problems)
        return data


def _unknown_environment(environ: Mapping[str, str]) -> list[str]:
    """``TELEHEALTH_*`` variables that name no setting: most likely a typo, so say so."""
    known = {_env_name(name) for name in Settings.model_fields}
    known |= {f"{_env_name(name)}_FILE" for name in SECRET_FIELDS}
    known.add(CONFIG_ENV)
    return [
        f"{name}: unknown setting"
        for name in sorted(environ)
        if name.upper().startswith(ENV_PREFIX) and name.upper() not in known
    ]


def _describe(error: Mapping[str, Any]) -> str:
    location = ".".join(str(part) for part in error.get("loc", ())) or "settings"
    field = location.split(".")[0]
    where = f"{location} ({_env_name(field)})" if field in Settings.model_fields else location
    message = str(error.get("msg", "invalid")).removeprefix("Value error, ")
    return f"{where}: {message}"


def load_settings(
    config_file: Path | None = None,
    environ: Mapping[str, str] | None = None,
    **overrides: Any,
) -> Settings:
    """Read settings from ``config_file`` (or ``$TELEHEALTH_CONFIG``), the environment and secret files.

    Raises ConfigError with one line per problem, each naming the setting.
    """
    env = os.environ if environ is None else environ
    if config_file is None and env.get(CONFIG_ENV):
        config_file = Path(env[CONFIG_ENV])
    problems = _unknown_environment(env)
    file_token = _CONFIG_FILE.set(config_file)
    env_token = _ENVIRON.set(env)
    try:
        settings = Settings(**overrides)
    except ValidationError as exc:
        problems += [_describe(error) for error in exc.errors()]
    except ConfigError as exc:
        problems += exc.problems
    finally:
        _CONFIG_FILE.reset(file_token)
        _ENVIRON.reset(env_token)
    if problems:
        raise ConfigError(problems)
    return settings
