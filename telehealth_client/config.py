"""Settings: environment variables ``TELEHEALTH_*``, a TOML file, and secrets from files.

Precedence, highest first: explicit keyword arguments, environment variables, secret
files, the TOML file, defaults. Secrets (keys, credentials, tokens) are read only from
the environment or from files: ``TELEHEALTH_<NAME>_FILE=/path`` or, under systemd,
``$CREDENTIALS_DIRECTORY/<name>`` (``LoadCredential=<name>:/etc/...``). A secret in the
TOML file is refused, since config files are often world-readable. Secrets are held as
``SecretStr`` and never printed.

A secret is trimmed the same way wherever it comes from, so the same key in a variable and
in a file is the same key. A secret file must be a regular file that no other user can read
or write (systemd's LoadCredential files, owner-only or shared with the service's user by an
ACL, pass).
"""

from __future__ import annotations

import difflib
import errno
import json
import os
import stat
import struct
import tomllib
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextvars import ContextVar
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from devices.sources import DeviceUsageError, parse_audio_device, parse_camera_source
from devices.thresholds import DeviceThresholds
from telehealth_client.outbound import (
    check_ca_bundle,
    check_proxy_authorization,
    parse_no_proxy,
    parse_proxy_url,
)
from telehealth_client.protocol.channels import InvalidIdError, validate_id

T = TypeVar("T")

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
    "previous_device_credentials",
    "api_token",
    "proxy_authorization",
)
# Secrets that hold several values (one a line in a file or variable, or a JSON list).
LIST_SECRET_FIELDS = ("previous_cipher_keys", "previous_device_credentials")
# Shorter than this is a passphrase, not a key: PubNub derives the AES key from it.
MIN_CIPHER_KEY_LENGTH = 16
# Far more than any key or token: a bigger "secret file" is the wrong file.
MAX_SECRET_FILE_BYTES = 64 * 1024
# What scripts/install-kiosk.sh writes into each credential file until the operator fills it in.
PLACEHOLDER_MARK = "FILL-IN"


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


def _split_origin(value: str) -> tuple[str, int | None]:
    """``host``, ``host:port`` or ``[ipv6]:port``; ValueError says what is wrong."""
    if value.startswith("["):
        host, bracket, rest = value[1:].partition("]")
        if not bracket:
            raise ValueError("an IPv6 address needs its closing ']'")
        if rest and not rest.startswith(":"):
            raise ValueError("must be host or host:port, without scheme or path")
        port = rest[1:] if rest else None
    elif value.count(":") > 1:
        raise ValueError("an IPv6 address must be in brackets: [address]:port")
    else:
        host, colon, after = value.partition(":")
        port = after if colon else None
    if not host:
        raise ValueError("has no host")
    if port is None:
        return host, None
    if not (port.isascii() and port.isdigit() and 1 <= int(port) <= 65535):
        raise ValueError(f"port must be a number from 1 to 65535 (found {port!r})")
    return host, int(port)


class ConfigError(Exception):
    """Settings that cannot start the agent; ``problems`` holds one line per problem."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


class MissingSecretError(ValueError):
    """A secret the agent needs is not set; the message lists every place it was looked for."""


def _check_characters(text: str) -> None:
    # Before the line check: the installer's two-line placeholder is named as what it is.
    if text.lstrip().startswith(PLACEHOLDER_MARK):
        raise ValueError(
            "is still the installer's placeholder: replace the whole file with the value itself, on one line"
        )
    # Each of these makes a key that differs from the one typed, silently: refuse them.
    if "\ufeff" in text:
        raise ValueError("contains a byte order mark (BOM): save it as UTF-8 without one")
    if "\x00" in text:
        raise ValueError("contains a NUL character")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("is not UTF-8 text") from None


def _clean_key(name: str, text: str) -> str:
    trimmed = text.strip()
    if not trimmed:
        raise ValueError("must not be empty")
    if not trimmed.isprintable():
        raise ValueError("contains a line break or control character")
    if name == "cipher_key" and len(trimmed) < MIN_CIPHER_KEY_LENGTH:
        raise ValueError(f"must be at least {MIN_CIPHER_KEY_LENGTH} characters (found {len(trimmed)})")
    return trimmed


def clean_secret(name: str, text: str) -> str:
    """The secret ``name`` as used, whatever its source: surrounding whitespace trimmed.

    Raises ValueError with the reason (never the value) when it cannot be a usable secret.
    """
    _check_characters(text)
    return _clean_key(name, text)


def clean_secret_lines(name: str, text: str) -> list[str]:
    """One secret per line (``previous_cipher_keys``, ``previous_device_credentials``); a blank
    line among them is a mistake."""
    _check_characters(text)
    trimmed = text.strip()
    if not trimmed:
        raise ValueError("must not be empty (unset it for none)")

    def clean_line(line: str) -> str:
        if not line.strip():
            raise ValueError("is blank")
        return _clean_key(name, line)

    return _clean_each("line", trimmed.splitlines(), clean_line)


def clean_secret_list(name: str, items: list[Any]) -> list[str]:
    """A JSON list of secrets: each a non-blank string."""

    def clean_item(item: object) -> str:
        if not isinstance(item, str):
            raise ValueError("must be a string")
        return clean_secret(name, item)

    return _clean_each("item", items, clean_item)


def _clean_each(unit: str, items: Sequence[T], clean: Callable[[T], str]) -> list[str]:
    """Each of ``items`` cleaned; a problem names its ``unit`` and number (``line 2 is blank``)."""
    keys = []
    for number, item in enumerate(items, start=1):
        try:
            keys.append(clean(item))
        except ValueError as exc:
            raise ValueError(f"{unit} {number} {exc}") from None
    return keys


def _absolute(path: Path) -> None:
    # The service's working directory is /: a relative path would name a different place for
    # the service than for the operator who tried it from their own directory.
    if not path.is_absolute():
        raise ValueError(
            f"must be an absolute path (found {str(path)!r}; the service runs in /, so a relative "
            "path would not mean the same place)"
        )


def check_trusted_file(path: Path) -> None:
    """ValueError (the file, its mode and the fix) when a file that decides whom the agent
    trusts (the settings file, the CA bundle) could be changed by a user other than root or
    this agent's own: it could point the agent, and its device credential, at their server.

    A file that cannot be stat'ed is left to the reader, which names the reason.
    """
    try:
        info = os.stat(path)
    except OSError:
        return
    mode = stat.S_IMODE(info.st_mode)
    if _exposed_to(path, info) & _WRITE:
        raise ValueError(
            f"{path} can be written by other users (mode {mode:04o}), who could change whom the "
            f"agent trusts; run: chmod go-w {path}"
        )
    if info.st_uid not in (0, os.geteuid()):
        raise ValueError(
            f"{path} belongs to user ID {info.st_uid} (mode {mode:04o}), who could change whom the "
            f"agent trusts; run: chown root {path} && chmod go-w {path}"
        )


class Settings(BaseSettings):
    """Everything the agent can be told. README.md lists each with its variable and default."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        extra="forbid",
        case_sensitive=False,
        hide_input_in_errors=True,
        validate_default=True,
    )

    # Where secret files were looked for at load (missing-secret messages name it).
    _credentials_directory: str | None = PrivateAttr(default=None)
    # Where each value not left at its default came from (``origin``), recorded by the sources.
    _origins: dict[str, str] = PrivateAttr(default_factory=dict)

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
    reconnect_max_seconds: float = Field(default=5.0, gt=0, le=600, description="longest reconnect back-off")
    request_timeout_seconds: float = Field(default=10.0, gt=0, le=120, description="non-subscribe requests")

    # The clinic backend (token server, TURN credentials, audit sink).
    clinic_url: str = Field(default="http://127.0.0.1:8480", description="base URL of the clinic backend")
    device_credential: SecretStr | None = Field(
        default=None,
        description="this agent's bearer credential for the clinic backend; keys its audit trail (secret)",
    )
    previous_device_credentials: list[SecretStr] = Field(
        default_factory=list,
        description="device credentials rotated out: the audit records they signed still verify",
    )

    # Hospital networks: how PubNub, the clinic backend and TURN over TCP/TLS are reached
    # (telehealth_client/outbound.py says the rules).
    https_proxy: str | None = Field(
        default=None,
        description="HTTP proxy (http://host:port) every TLS connection goes through as a CONNECT tunnel",
    )
    proxy_authorization: SecretStr | None = Field(
        default=None, description="the proxy's Basic credentials, user:password (secret)"
    )
    no_proxy: list[str] = Field(
        default_factory=list,
        description="hosts (or .domain suffixes) reached directly, not through https_proxy",
    )
    ca_bundle: Path | None = Field(
        default=None,
        description="PEM file of CA certificates trusted besides the system's (a TLS-inspecting proxy's)",
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
    media: bool = Field(
        default=True, description="hold video calls (each call's media in a child process); off: chat only"
    )
    relay_only: bool = Field(default=True, description="media only through TURN (ICE policy 'relay')")
    media_memory_ceiling_mb: int = Field(
        default=600,
        ge=100,
        le=16384,
        description="a media child over this many MB resident (~150 in a call) is replaced between calls",
    )
    wildcard_subscribe: bool = Field(
        default=True,
        description="provider carts: follow waiting consultations through one PubNub wildcard"
        " subscribe (the keyset must have it); off: each lists its channels, at most 24 at once",
    )

    # Network preflight (`telehealth-agent preflight`): where "good" ends and "poor" begins.
    preflight_good_jitter_ms: float = Field(
        default=30.0, gt=0, le=1000, description="jitter under this is good for video (ms)"
    )
    preflight_good_loss_percent: float = Field(
        default=1.0, gt=0, le=100, description="packet loss under this is good for video (%)"
    )
    preflight_poor_loss_percent: float = Field(
        default=5.0, gt=0, le=100, description="packet loss over this allows audio only (%)"
    )
    preflight_poor_rtt_ms: float = Field(
        default=300.0, gt=0, le=10_000, description="round-trip time over this allows audio only (ms)"
    )
    preflight_media_seconds: float = Field(
        default=4.0, ge=1, le=30, description="how long the media test through TURN measures (s)"
    )

    # Local HTTP API (``telehealth-agent run`` serves it unless api_enabled is false; it then needs
    # api_token, a secret like the keys).
    api_enabled: bool = Field(default=True, description="serve the local HTTP API (needs api_token)")
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
    # What stays in state_dir and for how long (telehealth_client/retention.py).
    retention_days: int = Field(
        default=30,
        ge=1,
        le=3650,
        description="days after which delivered audit records, unsent outbox items and ended "
        "consultations' files are removed",
    )
    undelivered_limit_mb: int = Field(
        default=64,
        ge=1,
        le=1_000_000,
        description="undelivered audit records and outbox items over this (MB) are reported, never deleted",
    )
    log_level: str = Field(default="INFO", description="DEBUG, INFO, WARNING or ERROR")
    log_format: str = Field(default="kv", description="'kv' (key=value) or 'json'")

    @field_validator("origin")
    @classmethod
    def _origin_is_host(cls, value: str) -> str:
        if not value or any(char in value for char in "/ ?#@"):
            raise ValueError("must be host or host:port, without scheme or path")
        _split_origin(value)
        return value

    @field_validator(*(name for name in SECRET_FIELDS if name not in LIST_SECRET_FIELDS), mode="before")
    @classmethod
    def _secret_usable(cls, value: Any, info: ValidationInfo) -> Any:
        # The sources have cleaned what they read; this covers values passed in code. An empty
        # key would silently mean "no encryption" or "no credential".
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        if isinstance(value, str):
            return clean_secret(str(info.field_name), value)
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

    @field_validator("https_proxy")
    @classmethod
    def _proxy_is_http(cls, value: str | None) -> str | None:
        if value is None:
            return None
        host, port = parse_proxy_url(value)
        return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"

    @field_validator("proxy_authorization")
    @classmethod
    def _proxy_credentials(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            check_proxy_authorization(value.get_secret_value())
        return value

    @field_validator("no_proxy", mode="before")
    @classmethod
    def _no_proxy_hosts(cls, value: Any) -> Any:
        return parse_no_proxy(value)

    @field_validator("ca_bundle")
    @classmethod
    def _ca_bundle_loads(cls, value: Path | None) -> Path | None:
        if value is not None:
            _absolute(value)
            # Before its contents: a CA another user could swap would let them vouch for any server.
            check_trusted_file(value)
            check_ca_bundle(value)
        return value

    @field_validator("state_dir", "api_socket")
    @classmethod
    def _absolute_path(cls, value: Path | None) -> Path | None:
        if value is not None:
            _absolute(value)
        return value

    @field_validator("*", mode="before")
    @classmethod
    def _number_not_boolean(cls, value: Any, info: ValidationInfo) -> Any:
        # pydantic would take true as 1: "retention_days = true" is a mistake, not a day.
        numeric = cls.model_fields[str(info.field_name)].annotation in (int, float)
        if numeric and isinstance(value, bool):
            raise ValueError(f"must be a number, not {str(value).lower()}")
        return value

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

    @field_validator(*LIST_SECRET_FIELDS, mode="before")
    @classmethod
    def _split_key_lines(cls, value: Any, info: ValidationInfo) -> Any:
        # A file or variable holds one key per line; JSON lists come through as lists.
        if isinstance(value, str):
            return clean_secret_lines(str(info.field_name), value)
        if isinstance(value, list):
            plain = [item.get_secret_value() if isinstance(item, SecretStr) else item for item in value]
            return clean_secret_list(str(info.field_name), plain)
        return value

    @model_validator(mode="after")
    def _backoff_ordered(self) -> Settings:
        if self.reconnect_max_seconds < self.reconnect_min_seconds:
            raise ValueError("reconnect_max_seconds must not be below reconnect_min_seconds")
        return self

    @model_validator(mode="after")
    def _proxy_credentials_need_a_proxy(self) -> Settings:
        # Credentials for no proxy are a mistake that would otherwise pass unnoticed.
        if self.proxy_authorization is not None and self.https_proxy is None:
            raise ValueError("proxy_authorization is set but https_proxy is not")
        return self

    @model_validator(mode="after")
    def _preflight_loss_ordered(self) -> Settings:
        # "Good" loss above "poor" loss would call a path both at once.
        if self.preflight_poor_loss_percent < self.preflight_good_loss_percent:
            raise ValueError("preflight_poor_loss_percent must not be below preflight_good_loss_percent")
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

    def require_secret(self, name: str) -> SecretStr:
        """The secret ``name``; MissingSecretError lists every place it was looked for."""
        value = getattr(self, name)
        if isinstance(value, SecretStr):
            return value
        directory = self._credentials_directory
        credential = (
            f"the systemd credential {Path(directory) / name}"
            if directory
            else f"the systemd credential '{name}' (${CREDENTIALS_DIRECTORY_ENV} is not set)"
        )
        raise MissingSecretError(
            f"{name}: not set; looked in {_env_name(name)}, {_env_name(name)}_FILE and {credential}"
        )

    def source_of(self, name: str) -> str:
        """Where the setting ``name`` came from: ``default``, ``config file PATH``, ``environment
        VARIABLE``, ``file PATH (VARIABLE)``, ``systemd credential PATH`` or ``argument``."""
        return self._origins.get(name, "default")

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
# Problems the sources found; a source leaves out what it cannot read, so validation still
# runs and every problem of one load is reported together.
_SOURCE_PROBLEMS: ContextVar[list[str] | None] = ContextVar("telehealth_source_problems", default=None)
# The keys the config file gave: a value error names the file, not an environment variable.
_FILE_KEYS: ContextVar[frozenset[str]] = ContextVar("telehealth_file_keys", default=frozenset())
# Where each value came from. The sources run highest precedence first, so the first one to
# record a setting is the one whose value is used.
_ORIGINS: ContextVar[dict[str, str] | None] = ContextVar("telehealth_origins", default=None)


def _record_origin(name: str, origin: str) -> None:
    origins = _ORIGINS.get()
    if origins is not None:
        origins.setdefault(name, origin)


def _report(problems: list[str]) -> None:
    collected = _SOURCE_PROBLEMS.get()
    if collected is None:  # a source used outside load_settings
        raise ConfigError(problems)
    collected.extend(problems)


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
            try:
                values[name] = _environment_value(name, raw)
            except ValueError as exc:
                problems.append(f"{name} ({_env_name(name)}): {exc}")
            else:
                _record_origin(name, f"environment {_env_name(name)}")
        if problems:
            _report(problems)
        return values


def _environment_value(name: str, raw: str) -> Any:
    if name in LIST_SECRET_FIELDS:
        if not raw.lstrip().startswith("["):
            return clean_secret_lines(name, raw)
        items = _json(raw)
        if not isinstance(items, list):
            raise ValueError("must be a JSON list of strings or one key per line")
        return clean_secret_list(name, items)
    if name in SECRET_FIELDS:
        return clean_secret(name, raw)
    if name in _JSON_FIELDS:
        return _json(raw)
    return raw


def _json(raw: str) -> Any:
    try:
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not valid JSON: {exc.msg}") from None


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
            variable = f"{_env_name(name)}_FILE"
            explicit = self._environ.get(variable)
            if explicit is not None and not explicit.strip():
                problems.append(f"{name} ({variable}): is empty; give the secret file's path or unset it")
                continue
            if explicit is not None:
                path, origin = Path(explicit), f"{variable}={explicit}"
                source = f"file {path} ({variable})"
            elif credentials_dir and os.path.lexists(Path(credentials_dir) / name):
                path = Path(credentials_dir) / name
                origin = f"credential {path}"
                source = f"systemd credential {path}"
            else:
                continue
            try:
                text = read_secret_file(path)
                values[name] = (
                    clean_secret_lines(name, text) if name in LIST_SECRET_FIELDS else clean_secret(name, text)
                )
            except ValueError as exc:
                problems.append(f"{name} ({origin}): {exc}")
            else:
                _record_origin(name, source)
        if problems:
            _report(problems)
        return values


# POSIX ACL as Linux stores it in this extended attribute (acl_ea_header, acl_ea_entry).
_ACL_XATTR = "system.posix_acl_access"
_ACL_VERSION = 2
_ACL_USER, _ACL_GROUP_OBJ, _ACL_GROUP, _ACL_MASK = 0x02, 0x04, 0x08, 0x10
_READ, _WRITE = 0o4, 0o2


def _acl_entries(path: Path) -> list[tuple[int, int, int]] | None:
    """(tag, permissions, user or group ID) of the file's ACL, or None when it has none."""
    try:
        raw = os.getxattr(path, _ACL_XATTR)
    except OSError as exc:
        if exc.errno in (errno.ENODATA, errno.ENOTSUP, errno.EOPNOTSUPP):
            return None
        raise ValueError(f"cannot read the permissions of {path}: {exc.strerror or exc}") from None
    return parse_acl(path, raw)


def parse_acl(path: Path, raw: bytes) -> list[tuple[int, int, int]]:
    """The (tag, permissions, ID) entries of ``path``'s ACL attribute ``raw``.

    ValueError for a layout this agent does not know, rather than judging a file by a guess.
    """
    if len(raw) < 4 or (len(raw) - 4) % 8 or struct.unpack_from("<I", raw)[0] != _ACL_VERSION:
        raise ValueError(f"{path} has an access control list this agent cannot read")
    return [struct.unpack_from("<HHI", raw, offset) for offset in range(4, len(raw), 8)]


def _exposed_to(path: Path, info: os.stat_result) -> int:
    """Read/write bits that someone other than the owner or this process's user holds.

    The group counts as "other users". systemd shares a credential with a service's user by
    an ACL entry for that user; the mode's group bits are then the ACL mask, not a group.
    """
    bits = info.st_mode & 0o7
    acl = _acl_entries(path)
    if acl is None:
        bits |= (info.st_mode >> 3) & 0o7
    else:
        mask = next((perms for tag, perms, _ in acl if tag == _ACL_MASK), 0o7)
        allowed = {info.st_uid, os.geteuid()}
        for tag, perms, qualifier in acl:
            if tag in (_ACL_GROUP_OBJ, _ACL_GROUP) or (tag == _ACL_USER and qualifier not in allowed):
                bits |= perms & mask
    return bits & (_READ | _WRITE)


def _file_kind(mode: int) -> str:
    kinds = (
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
    )
    return next((kind for test, kind in kinds if test(mode)), "not a regular file")


def read_secret_file(path: Path) -> str:
    """The text of a secret file. ValueError says why it cannot be used, never what it holds.

    Judged by ``stat`` before it is opened, so a FIFO or a device never blocks the load, and
    opened non-blocking in case it is swapped for one in between.
    """
    try:
        info = os.stat(path)
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror or exc}") from None
    if not stat.S_ISREG(info.st_mode):
        raise ValueError(f"{path} is {_file_kind(info.st_mode)}, not a regular file")
    exposed = _exposed_to(path, info)
    if exposed:
        access = " and ".join(word for bit, word in ((_READ, "read"), (_WRITE, "written")) if exposed & bit)
        mode = stat.S_IMODE(info.st_mode)
        if os.path.islink(path):
            # chmod follows the link: it would change the target (/etc/hostname, say), not the secret.
            raise ValueError(
                f"{path} is a symbolic link to {os.path.realpath(path)}, which can be {access} by other "
                f"users (mode {mode:04o}); replace the link with a regular file holding the secret, "
                "mode 0600 (chmod on the link would change its target)"
            )
        raise ValueError(f"{path} can be {access} by other users (mode {mode:04o}); run: chmod 600 {path}")
    if info.st_size > MAX_SECRET_FILE_BYTES:
        raise ValueError(f"{path} is larger than {MAX_SECRET_FILE_BYTES // 1024} KiB: not a secret file")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        opened = os.fstat(fd)
        if (opened.st_dev, opened.st_ino) != (info.st_dev, info.st_ino):
            raise ValueError(f"{path} was replaced while it was read")
        data = os.read(fd, MAX_SECRET_FILE_BYTES + 1)
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror or exc}") from None
    finally:
        os.close(fd)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError("is not UTF-8 text") from None


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
            check_trusted_file(self._path)
        except ValueError as exc:  # its contents are not to be believed: nothing else is told
            raise ConfigError([f"config file {exc}"]) from None
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
            f"{key} (config file): unknown setting{_suggestion(key, self.settings_cls.model_fields)}"
            for key in data
            if key not in self.settings_cls.model_fields
        ]
        # A TOML boolean is true or false: "no", "off" or 0 would otherwise pass as false.
        problems += [
            f"{key} (config file): must be true or false (a TOML boolean, not {_toml_type(value)})"
            for key, value in data.items()
            if key in self.settings_cls.model_fields
            and self.settings_cls.model_fields[key].annotation is bool
            and not isinstance(value, bool)
        ]
        if problems:
            # Reported with whatever else the load finds (a bad user_id beside a secret here),
            # and left out so that the rest is still validated.
            _report(problems)
            named = {problem.split(" ", 1)[0] for problem in problems}
            data = {key: value for key, value in data.items() if key not in named}
        _FILE_KEYS.set(frozenset(data))
        for key in data:
            _record_origin(key, f"config file {self._path}")
        return data


def _toml_type(value: object) -> str:
    kinds = (
        (str, "a string"),
        (int, "an integer"),
        (float, "a float"),
        (dict, "a table"),
        (list, "an array"),
    )
    return next((kind for python, kind in kinds if isinstance(value, python)), "a date or time")


def _suggestion(name: str, valid: Iterable[str]) -> str:
    """``; did you mean X?`` for the closest valid name, or nothing when none is close."""
    close = difflib.get_close_matches(name, sorted(valid), n=1)
    return f"; did you mean {close[0]}?" if close else ""


def _unknown_environment(environ: Mapping[str, str]) -> list[str]:
    """``TELEHEALTH_*`` variables (any case) that name no setting: most likely a typo, so say so."""
    known = {_env_name(name) for name in Settings.model_fields}
    known |= {f"{_env_name(name)}_FILE" for name in SECRET_FIELDS}
    known.add(CONFIG_ENV)
    # Only the upper-case spelling is read: a lower-case one would be silently ignored.
    return [
        f"{name}: unknown setting{_suggestion(name.upper(), known)}"
        for name in sorted(environ)
        if name.upper().startswith(ENV_PREFIX) and name not in known
    ]


def _describe(error: Mapping[str, Any]) -> str:
    location = ".".join(str(part) for part in error.get("loc", ())) or "settings"
    field = location.split(".")[0]
    where = location
    if field in Settings.model_fields:
        # Where the value came from: the environment wins over the file (and names itself).
        env_name = _env_name(field)
        environ = _ENVIRON.get()
        from_file = field in _FILE_KEYS.get() and env_name not in environ
        where = f"{location} (config file)" if from_file else f"{location} ({env_name})"
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
    problems = _unknown_environment(env)
    if config_file is None and CONFIG_ENV in env:
        if env[CONFIG_ENV].strip():
            config_file = Path(env[CONFIG_ENV])
        else:
            problems.append(f"{CONFIG_ENV}: is empty; give the config file's path or unset it")
    source_problems: list[str] = []
    invalid: list[str] = []
    file_token = _CONFIG_FILE.set(config_file)
    env_token = _ENVIRON.set(env)
    problems_token = _SOURCE_PROBLEMS.set(source_problems)
    file_keys_token = _FILE_KEYS.set(frozenset())
    origins = dict.fromkeys(overrides, "argument")
    origins_token = _ORIGINS.set(origins)
    try:
        settings = Settings(**overrides)
    except ValidationError as exc:
        invalid = [_describe(error) for error in exc.errors()]
    except ConfigError as exc:
        invalid = exc.problems
    finally:
        _CONFIG_FILE.reset(file_token)
        _ENVIRON.reset(env_token)
        _SOURCE_PROBLEMS.reset(problems_token)
        _FILE_KEYS.reset(file_keys_token)
        _ORIGINS.reset(origins_token)
    problems += source_problems + invalid
    if problems:
        raise ConfigError(problems)
    settings._credentials_directory = env.get(CREDENTIALS_DIRECTORY_ENV)
    settings._origins = origins
    return settings
