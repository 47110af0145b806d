"""The whole development column in one object: relay, coturn and the clinic stand-in on loopback.

FOR DEVELOPMENT, THE DEMO AND TESTS ONLY. Production uses PubNub, the hospital's token
server and its TURN server; nothing here is a broker or a backend to deploy.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import secrets
from collections.abc import Mapping, Sequence
from contextlib import AsyncExitStack
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from telehealth_client.protocol.channels import InvalidIdError, validate_id
from telehealth_devstack.clinic import (
    DEFAULT_PATIENT_TOKEN_LIMIT,
    Clinic,
    DeviceIdentity,
    RateLimit,
    StaffMember,
)
from telehealth_devstack.clinic.directory import StaffRole
from telehealth_devstack.console import ConsoleSettings, ProviderConsole
from telehealth_devstack.private_file import write_private
from telehealth_devstack.relay import Relay
from telehealth_devstack.turn import TurnServer

if TYPE_CHECKING:
    from telehealth_client.pubsub.pubnub_bus import BusConfig

# The department of every provider and nurse not given one: the README's examples use it.
DEFAULT_DEPARTMENT = "er"
# The organization the development clinic serves: it names the audit channel.
DEFAULT_ORGANIZATION = "org-dev"
AUDITOR_USER_ID = "dev-auditor"
# The check-in kiosk's device ID unless a stack is given others: the tests' kiosk.
DEFAULT_KIOSK = "kiosk-1"


def _device_credential(kind: str) -> str:
    return f"dev-{kind}-" + secrets.token_urlsafe(24)


@dataclass(frozen=True)
class DevStackKeys:
    """Keys of the development keyset. Random per run unless kept in a state directory
    (``load_or_create``): nothing here is worth stealing.

    ``auditor_credential`` (user ``AUDITOR_USER_ID``) reads the audit sink and does nothing else.
    Each check-in kiosk (``kiosk_credential``), provider and nurse (``staff_credential``) gets its
    own, derived from ``staff_secret``.
    """

    publish_key: str = field(default_factory=lambda: "pub-c-dev-" + secrets.token_hex(8))
    subscribe_key: str = field(default_factory=lambda: "sub-c-dev-" + secrets.token_hex(8))
    secret_key: str = field(default_factory=lambda: "sec-c-dev-" + secrets.token_hex(16))
    cipher_key: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    auditor_credential: str = field(default_factory=lambda: _device_credential("auditor"))
    staff_secret: str = field(default_factory=lambda: secrets.token_urlsafe(32))

    def staff_credential(self, role: str, user_id: str) -> str:
        """A provider's or nurse's cart credential: derived, so a kept keyset keeps these too."""
        digest = hmac.new(self.staff_secret.encode(), f"{role}:{user_id}".encode(), hashlib.sha256).digest()
        return f"dev-{role}-" + base64.urlsafe_b64encode(digest).decode().rstrip("=")

    def api_token(self, user_id: str) -> str:
        """The local API token of the agent of ``user_id`` (a kiosk's device ID or a cart's user):
        derived like the credentials, so a kept keyset keeps these too."""
        return self.staff_credential("local-api", user_id)

    def kiosk_credential(self, device_id: str) -> str:
        """The credential of the check-in kiosk with device ID ``device_id`` (derived like a cart's):
        patient tokens, and TURN credentials and audit events for patients and that device."""
        return self.staff_credential("kiosk", device_id)

    @classmethod
    def load_or_create(cls, path: Path) -> DevStackKeys:
        """The keyset kept in ``path`` (JSON, mode 0600), or a new one written there.

        A stack restarted on the same state must keep its keys: tokens in the clinic's ledger
        and the relay's revocations are bound to them. Blocking: not on the event loop.
        ValueError names the file and the field when it holds something else.
        """
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            keys = cls()
            write_private(path, json.dumps(asdict(keys)).encode())
            return keys
        except UnicodeDecodeError:
            raise ValueError(f"{path}: is not UTF-8 text") from None
        try:
            data = json.loads(text)
        except json.JSONDecodeError:
            raise ValueError(f"{path}: is not JSON") from None
        if not isinstance(data, dict):
            raise ValueError(f"{path}: must hold a JSON object")
        values: dict[str, str] = {}
        for key in fields(cls):
            value = data.get(key.name)
            if not isinstance(value, str) or not value:
                raise ValueError(f"{path}: {key.name}: must be a non-empty string")
            values[key.name] = value
        return cls(**values)


@dataclass(frozen=True)
class DevUser:
    """A provider or nurse of the development stack, with its cart's own device credential."""

    user_id: str
    role: StaffRole
    credential: str
    department_id: str = DEFAULT_DEPARTMENT

    @property
    def identity(self) -> DeviceIdentity:
        return DeviceIdentity(self.role, self.user_id)


class DevStack:
    """Starts the relay, then coturn, then the clinic; stops them in reverse.

    The clinic knows one device credential for each check-in kiosk of ``kiosks`` (their device
    IDs; ``kiosk_credential(device_id)``), bound to that device ID: patient tokens, and TURN
    credentials and audit events for patients and that device. One for the auditor
    (``keys.auditor_credential``), and one for each of ``providers`` and ``nurses``
    (``users[user_id].credential``), each bound to that user and role. A kiosk agent run under a
    device ID the stack does not list is refused what it asks for itself. Each provider
    and nurse belongs to ``departments[user_id]`` (default ``DEFAULT_DEPARTMENT``) in the
    clinic's directory. ``agent_environment(user_id)`` gives an agent its settings;
    ``bus_config(user_id, **options)`` an in-process bus on this stack.

    ``state_dir``: the relay's (``relay/``) and the clinic's (``clinic/``) durable state, so a
    stack restarted on the same directory still refuses the tokens it revoked. It needs the
    ``keys`` kept with it (``DevStackKeys.load_or_create(state_dir / "keys.json")``): the
    state is bound to them. None keeps everything in memory.

    ``token_ttl_minutes``: the clinic's token TTL per role where it differs from the grant rules'.

    ``on_call``: the on-call roster by department; default: every provider, for its department.

    ``organization_id``: the organization the clinic serves (the audit channel in every token);
    ``agent_environment`` gives agents the same as ``TELEHEALTH_ORGANIZATION_ID``.

    ``patient_token_limit``: how fast each kiosk's credential may mint patient tokens (beyond it
    the clinic answers 429); tests and benchmarks that check in many patients raise it.
    """

    def __init__(
        self,
        *,
        keys: DevStackKeys | None = None,
        enforce_access: bool = True,
        on_call: dict[str, list[str]] | None = None,
        state_dir: Path | None = None,
        relay_port: int = 0,
        providers: Sequence[str] = ("dr-demo",),
        nurses: Sequence[str] = (),
        kiosks: Sequence[str] = (DEFAULT_KIOSK,),
        departments: Mapping[str, str] | None = None,
        token_ttl_minutes: Mapping[str, int] | None = None,
        organization_id: str = DEFAULT_ORGANIZATION,
        patient_token_limit: RateLimit = DEFAULT_PATIENT_TOKEN_LIMIT,
    ) -> None:
        if state_dir is not None and keys is None:
            raise ValueError("state_dir needs the keys kept with it: keys=DevStackKeys.load_or_create(...)")
        self.keys = keys or DevStackKeys()
        self.users: dict[str, DevUser] = {}
        departments = dict(departments or {})
        staff: tuple[tuple[StaffRole, Sequence[str]], ...] = (("provider", providers), ("nurse", nurses))
        for role, user_ids in staff:
            if isinstance(user_ids, str):
                raise TypeError(f"{role}s must be a sequence of user IDs, not one string")
            for user_id in user_ids:
                if user_id in self.users:
                    raise ValueError(f"user ID {user_id!r} is listed twice")
                DeviceIdentity(role, user_id)  # a bad user ID fails here, not when the clinic starts
                department = departments.pop(user_id, DEFAULT_DEPARTMENT)
                StaffMember(role, department)  # so does a bad department ID
                credential = self.keys.staff_credential(role, user_id)
                self.users[user_id] = DevUser(user_id, role, credential, department)
        if departments:
            raise ValueError(
                f"departments names users that are not providers or nurses: {sorted(departments)}"
            )
        if isinstance(kiosks, str):
            raise TypeError("kiosks must be a sequence of device IDs, not one string")
        if not kiosks:
            raise ValueError("kiosks must name at least one kiosk device ID")
        self.kiosks: dict[str, str] = {}
        for device_id in kiosks:
            if device_id in self.users or device_id in self.kiosks:
                raise ValueError(f"user ID {device_id!r} is listed twice")
            DeviceIdentity.patient_kiosk(device_id)  # a bad device ID fails here
            self.kiosks[device_id] = self.keys.kiosk_credential(device_id)
        self._patient_token_limit = patient_token_limit
        self.state_dir = state_dir
        self.relay = Relay(
            port=relay_port,
            publish_key=self.keys.publish_key,
            subscribe_key=self.keys.subscribe_key,
            secret_key=self.keys.secret_key,
            enforce_access=enforce_access,
            state_dir=None if state_dir is None else state_dir / "relay",
        )
        self.turn = TurnServer()
        if on_call is None:
            # Every provider is on call for its department: an escalation reaches someone.
            on_call = {}
            for user in self.users.values():
                if user.role == "provider":
                    on_call.setdefault(user.department_id, []).append(user.user_id)
        self._on_call = on_call
        self._token_ttl_minutes = dict(token_ttl_minutes or {})
        try:
            self.organization_id = validate_id(organization_id, "organization_id")
        except InvalidIdError as exc:
            raise ValueError(f"organization_id {exc.reason}") from None
        self.clinic: Clinic | None = None
        self.console: ProviderConsole | None = None
        self._stack = AsyncExitStack()

    async def start(self) -> None:
        try:
            if self.relay.state_dir is not None:
                await asyncio.to_thread(self.relay.state_dir.mkdir, mode=0o700, parents=True, exist_ok=True)
            await self._stack.enter_async_context(self.relay)
            await self._stack.enter_async_context(self.turn)
            self.clinic = Clinic(
                relay_origin=self.relay.origin,
                publish_key=self.keys.publish_key,
                subscribe_key=self.keys.subscribe_key,
                secret_key=self.keys.secret_key,
                device_credentials=self.device_credentials(),
                turn_secret=self.turn.secret,
                turn_urls=self.turn.urls,
                on_call=self._on_call,
                state_dir=None if self.state_dir is None else self.state_dir / "clinic",
                directory={
                    user.user_id: StaffMember(user.role, user.department_id) for user in self.users.values()
                },
                token_ttl_minutes=self._token_ttl_minutes,
                organization_id=self.organization_id,
                patient_token_limit=self._patient_token_limit,
            )
            await self._stack.enter_async_context(self.clinic)
            self.console = ProviderConsole(self._console_settings(self.clinic.url))
            await self.console.start()
            self._stack.push_async_callback(self.console.stop)
        except BaseException:
            await self._stack.aclose()
            raise

    async def stop(self) -> None:
        await self._stack.aclose()

    async def __aenter__(self) -> DevStack:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    @property
    def console_url(self) -> str:
        """The provider console's page (``console/``), on loopback while the stack runs."""
        if self.console is None:
            raise RuntimeError("the development stack is not started")
        return self.console.url

    def _console_settings(self, clinic_url: str) -> ConsoleSettings:
        providers = {user.user_id: user for user in self.users.values() if user.role == "provider"}
        keys = self.keys
        return ConsoleSettings(
            self.relay.origin, keys.publish_key, keys.subscribe_key, keys.cipher_key, clinic_url, providers
        )

    def device_credentials(self) -> dict[str, DeviceIdentity]:
        """Every device credential the clinic accepts, with the identity it is bound to."""
        credentials = {
            credential: DeviceIdentity.patient_kiosk(kiosk) for kiosk, credential in self.kiosks.items()
        }
        credentials[self.keys.auditor_credential] = DeviceIdentity.auditor(AUDITOR_USER_ID)
        credentials.update({user.credential: user.identity for user in self.users.values()})
        return credentials

    @property
    def default_kiosk(self) -> str:
        """The first kiosk's device ID: the one ``agent_environment(None)`` is for."""
        return next(iter(self.kiosks))

    def kiosk_credential(self, device_id: str | None = None) -> str:
        """The device credential of the kiosk ``device_id`` (None: the first kiosk)."""
        device_id = self.default_kiosk if device_id is None else device_id
        if device_id not in self.kiosks:
            raise ValueError(f"no kiosk {device_id!r} on this stack (kiosks: {', '.join(self.kiosks)})")
        return self.kiosks[device_id]

    def bus_config(self, user_id: str, **options: Any) -> BusConfig:
        """A bus on this stack as ``user_id``: its keys and origin, no TLS; ``options`` set the
        rest of ``BusConfig`` (a token, shorter timeouts for tests and benchmarks)."""
        from telehealth_client.pubsub.pubnub_bus import BusConfig

        env = self.agent_environment()
        return BusConfig(
            user_id=user_id,
            subscribe_key=env["TELEHEALTH_SUBSCRIBE_KEY"],
            publish_key=env["TELEHEALTH_PUBLISH_KEY"],
            origin=env["TELEHEALTH_ORIGIN"],
            ssl=False,
            cipher_key=env["TELEHEALTH_CIPHER_KEY"],
            **options,
        )

    def call_page_settings(self, user_id: str) -> dict[str, str]:
        """The browser call page's ``start`` settings for ``user_id``'s cart (tests and benchmarks):
        where PubNub is, the keys, and the clinic the page fetches its token and TURN credentials
        from with the cart's device credential."""
        settings = self.agent_environment(user_id)
        return {
            "origin": settings["TELEHEALTH_ORIGIN"],
            "publishKey": settings["TELEHEALTH_PUBLISH_KEY"],
            "subscribeKey": settings["TELEHEALTH_SUBSCRIBE_KEY"],
            "cipherKey": settings["TELEHEALTH_CIPHER_KEY"],
            "userId": user_id,
            "departmentId": settings["TELEHEALTH_DEPARTMENT_ID"],
            "clinicUrl": settings["TELEHEALTH_CLINIC_URL"],
            "clinicCredential": settings["TELEHEALTH_DEVICE_CREDENTIAL"],
        }

    def agent_environment(self, user_id: str | None = None) -> dict[str, str]:
        """The ``TELEHEALTH_*`` settings an agent needs to use this stack.

        None: the first kiosk's; a kiosk's device ID (one of ``kiosks``): that kiosk's, with its own
        device credential and its device ID as the user ID. A provider's or nurse's user ID (one
        of ``users``): that user's, with its own device credential, user ID, role and department
        (which its standing token request names). Each with its own local API token
        (``TELEHEALTH_API_TOKEN``) and ``TELEHEALTH_API_PORT=0`` (a free port).
        """
        if self.clinic is None:
            raise RuntimeError("the development stack is not started")
        if user_id is not None and user_id not in self.users and user_id not in self.kiosks:
            raise ValueError(f"no device credential for user {user_id!r}: not one of the stack's users")
        environment = {
            "TELEHEALTH_ORIGIN": self.relay.origin,
            "TELEHEALTH_SSL": "false",
            "TELEHEALTH_PUBLISH_KEY": self.keys.publish_key,
            "TELEHEALTH_SUBSCRIBE_KEY": self.keys.subscribe_key,
            "TELEHEALTH_CIPHER_KEY": self.keys.cipher_key,
            "TELEHEALTH_CLINIC_URL": self.clinic.url,
            "TELEHEALTH_ORGANIZATION_ID": self.organization_id,
        }
        user = None if user_id is None else self.users.get(user_id)
        if user is None:
            # A kiosk: its device ID is the user ID it works under when idle.
            device_id = self.default_kiosk if user_id is None else user_id
            environment["TELEHEALTH_USER_ID"] = device_id
            environment["TELEHEALTH_DEVICE_CREDENTIAL"] = self.kiosks[device_id]
            environment.update(self._api_environment(device_id))
            return environment
        environment["TELEHEALTH_USER_ID"] = user.user_id
        environment["TELEHEALTH_ROLE"] = user.role
        environment["TELEHEALTH_DEVICE_CREDENTIAL"] = user.credential
        environment["TELEHEALTH_DEPARTMENT_ID"] = user.department_id
        environment.update(self._api_environment(user.user_id))
        return environment

    def _api_environment(self, user_id: str) -> dict[str, str]:
        """The local API's token, and a free port: agents on one machine (tests, several carts)
        never contend for the default one; each logs where it listens."""
        return {"TELEHEALTH_API_TOKEN": self.keys.api_token(user_id), "TELEHEALTH_API_PORT": "0"}
