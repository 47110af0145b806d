"""The whole development column in one object: relay, coturn and the clinic stand-in on loopback.

FOR DEVELOPMENT, THE DEMO AND TESTS ONLY. Production uses PubNub, the hospital's token
server and its TURN server; nothing here is a broker or a backend to deploy.
"""

from __future__ import annotations

import secrets
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from telehealth_client.devstack.clinic import Clinic
from telehealth_client.devstack.relay import Relay
from telehealth_client.devstack.turn import TurnServer


@dataclass(frozen=True)
class DevStackKeys:
    """Keys of the development keyset. Random per run: nothing here is worth stealing."""

    publish_key: str = field(default_factory=lambda: "pub-c-dev-" + secrets.token_hex(8))
    subscribe_key: str = field(default_factory=lambda: "sub-c-dev-" + secrets.token_hex(8))
    secret_key: str = field(default_factory=lambda: "sec-c-dev-" + secrets.token_hex(16))
    cipher_key: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    device_credential: str = field(default_factory=lambda: "dev-device-" + secrets.token_urlsafe(24))


class DevStack:
    """Starts the relay, then coturn, then the clinic; stops them in reverse."""

    def __init__(
        self,
        *,
        keys: DevStackKeys | None = None,
        enforce_access: bool = True,
        on_call: dict[str, list[str]] | None = None,
        audit_db_path: Path | None = None,
        relay_port: int = 0,
    ) -> None:
        self.keys = keys or DevStackKeys()
        self.relay = Relay(
            port=relay_port,
            publish_key=self.keys.publish_key,
            subscribe_key=self.keys.subscribe_key,
            secret_key=self.keys.secret_key,
            enforce_access=enforce_access,
        )
        self.turn = TurnServer()
        self._on_call = on_call or {}
        self._audit_db_path = audit_db_path
        self.clinic: Clinic | None = None
        self._stack = AsyncExitStack()

    async def start(self) -> None:
        try:
            await self._stack.enter_async_context(self.relay)
            await self._stack.enter_async_context(self.turn)
            self.clinic = Clinic(
                relay_origin=self.relay.origin,
                publish_key=self.keys.publish_key,
                subscribe_key=self.keys.subscribe_key,
                secret_key=self.keys.secret_key,
                device_credential=self.keys.device_credential,
                turn_secret=self.turn.secret,
                turn_urls=self.turn.urls,
                on_call=self._on_call,
                audit_db_path=self._audit_db_path,
            )
            await self._stack.enter_async_context(self.clinic)
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

    def agent_environment(self) -> dict[str, str]:
        """The ``TELEHEALTH_*`` settings an agent needs to use this stack."""
        if self.clinic is None:
            raise RuntimeError("the development stack is not started")
        return {
            "TELEHEALTH_ORIGIN": self.relay.origin,
            "TELEHEALTH_SSL": "false",
            "TELEHEALTH_PUBLISH_KEY": self.keys.publish_key,
            "TELEHEALTH_SUBSCRIBE_KEY": self.keys.subscribe_key,
            "TELEHEALTH_CIPHER_KEY": self.keys.cipher_key,
            "TELEHEALTH_CLINIC_URL": self.clinic.url,
            "TELEHEALTH_DEVICE_CREDENTIAL": self.keys.device_credential,
        }
