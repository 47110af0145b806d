"""The composition root: builds the agent's parts, starts them in order, stops them in reverse."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from telehealth_client import systemd
from telehealth_client.api.app import ApiStartError, LocalApi
from telehealth_client.audit.identity import trail_identity
from telehealth_client.audit.trail import AuditStoreError, DamagedStoreError
from telehealth_client.config import MissingSecretError, Role, Settings
from telehealth_client.connector import Connector
from telehealth_client.consultation.patient import PatientEndpoint
from telehealth_client.consultation.provider import ProviderEndpoint
from telehealth_client.consultation.session import SessionError
from telehealth_client.consultation.state_file import StateFileError
from telehealth_client.durability import Durable
from telehealth_client.durable.outbox import OutboxFileError
from telehealth_client.emergency.desk import EmergencyDesk
from telehealth_client.events import EventHub
from telehealth_client.logs import describe_exception
from telehealth_client.media.options import media_options
from telehealth_client.protocol import channels
from telehealth_client.pubsub.bus import ConnectionStatus, Envelope, StatusChange, Subscription
from telehealth_client.pubsub.pubnub_bus import BusConfig, PubNubBus
from telehealth_client.retention import Retention, RetentionPolicy
from telehealth_client.security import tokens
from telehealth_client.security.clinic_client import ClinicClient, ClinicError
from telehealth_client.security.token_announcer import TokenAnnouncer

if TYPE_CHECKING:  # the preflight loads the device checks (numpy) when it runs, not before
    from telehealth_client.preflight import PreflightReport

log = logging.getLogger(__name__)


class StartError(Exception):
    """Why the agent cannot start, in words written for the person on call: no PHI, no secret,
    so the message itself is logged (other exceptions are logged by type and place only)."""


class StateDirError(StartError):
    """The state directory cannot hold the consultation's state: names the path and the reason."""


def ensure_writable_directory(directory: Path) -> None:
    """Create ``directory`` (owner-only) if needed and prove a file can be written there."""
    try:
        # Each missing level owner-only too: mkdir(parents=True) gives the parents default modes.
        for level in reversed([directory, *directory.parents]):
            if not level.exists():
                level.mkdir(mode=0o700, exist_ok=True)
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=directory, prefix=".probe-")  # noqa: SIM115
        probe.close()
    except OSError as exc:
        raise StateDirError(f"state_dir: {directory}: cannot be written ({type(exc).__name__})") from None


def bus_config(settings: Settings, *, token: str | None = None) -> BusConfig:
    """The bus's view of the settings. Without a subscribe key the agent cannot start.

    Raises MissingSecretError (a ValueError) naming every place a missing key was looked for.
    """
    subscribe_key = settings.require_secret("subscribe_key")
    # Every PHI channel is end-to-end encrypted: without a key the agent must not start.
    cipher_key = settings.require_secret("cipher_key")
    return BusConfig(
        user_id=settings.user_id,
        subscribe_key=subscribe_key.get_secret_value(),
        publish_key=settings.publish_key.get_secret_value() if settings.publish_key else None,
        origin=settings.origin,
        ssl=settings.ssl,
        cipher_key=cipher_key.get_secret_value(),
        previous_cipher_keys=tuple(key.get_secret_value() for key in settings.previous_cipher_keys),
        token=token,
        presence_timeout_seconds=settings.presence_timeout_seconds,
        reconnect_min_seconds=settings.reconnect_min_seconds,
        reconnect_max_seconds=settings.reconnect_max_seconds,
        request_timeout_seconds=settings.request_timeout_seconds,
    )


NotificationHandler = Callable[[Envelope], Awaitable[None] | None]


CONSULTATION_STATE_DIR = "consultation"


class Agent:
    """One kiosk or cart agent. ``start`` then ``aclose``; or ``run`` until a signal.

    It composes the event hub (``hub``) and the role's endpoint: ``patient`` (a
    ``PatientEndpoint``: ``check_in``, ``leave``, ``report_devices``) or ``provider`` (a
    ``ProviderEndpoint``, which owns the provider's bus) or ``nurse`` (its standing token, kept
    fresh, and its notification channel). A consultation saved in
    ``state_dir/consultation`` is resumed on start.

    ``serve_api``: also serve the local HTTP API (``api``, ``telehealth_client.api``) when the
    settings' ``api_enabled`` is on (``telehealth-agent run`` does); it then needs ``api_token``.
    """

    def __init__(self, settings: Settings, *, token: str | None = None, serve_api: bool = False) -> None:
        self.settings = settings
        self._token = token
        self._serve_api = serve_api and settings.api_enabled
        # The local API: made before the parts start (its event stream follows the hub from then),
        # listening once they have, stopped before them.
        self.api: LocalApi | None = None
        self.bus: PubNubBus | None = None
        self._notifications: Subscription | None = None
        # Set while the bus is connected; tests and the API wait on it.
        self.connected = asyncio.Event()
        self.notification_listeners: list[NotificationHandler] = []
        self.hub = EventHub()
        self.patient: PatientEndpoint | None = None
        self.provider: ProviderEndpoint | None = None
        self._connector: Connector | None = None
        self._keeper: tokens.TokenKeeper | None = None
        # The outbox and the audit trail (state_dir): opened first, closed after the endpoints.
        self.durable: Durable | None = None
        # Prunes what was delivered (retention_days) and reports an undelivered backlog.
        self.retention: Retention | None = None
        # A nurse's cart escalates emergencies itself; a provider's desk is its endpoint's.
        self._nurse_desk: EmergencyDesk | None = None
        # systemd's watchdog (when the unit sets WatchdogSec=): pinged from start to the end of stop.
        self._watchdog = systemd.WatchdogPinger()

    @property
    def idle(self) -> bool:
        """A patient kiosk between consultations: no token, no subscription, nothing to listen to.

        The clinic grants patient tokens per consultation, so asking for one now could only be
        refused, and subscribing without one only denied and retried forever.
        """
        if self.settings.role is not Role.PATIENT:
            return False
        return self.patient.idle if self.patient is not None else self._token is None

    def _build_connector(self) -> Connector:
        credential = self.settings.device_credential
        clinic = (
            None
            if credential is None
            else ClinicClient(
                self.settings.clinic_url,
                credential.get_secret_value(),
                timeout_seconds=self.settings.request_timeout_seconds,
            )
        )
        return Connector(bus_config(self.settings), clinic)

    @property
    def status(self) -> str:
        """One line for systemd's STATUS and the logs: idle, or the pub/sub connection's state."""
        warning = self.retention.warning if self.retention is not None else None
        storage = "" if warning is None else f"; storage: {warning}"
        if self.idle:
            return "idle" + storage
        session = self.patient.session if self.patient is not None else None
        if session is not None:
            return f"consultation {session.consultation.state}, pub/sub {session.bus.status}{storage}"
        return f"pub/sub {self.bus.status if self.bus is not None else ConnectionStatus.STOPPED}{storage}"

    async def start(self) -> str:
        """Build and start the parts; returns the status line (systemd's READY carries it)."""
        self._watchdog.start()  # first: a slow start (a clinic that answers late) is not a hang
        if self._serve_api:
            try:
                api_token = self.settings.require_secret("api_token")
            except MissingSecretError as exc:
                raise StartError(
                    f"{exc} (the local API is on: give it a token, or set api_enabled = false)"
                ) from None
            self.api = LocalApi(self, api_token.get_secret_value())
        # An unusable state directory would only show at check-in, with a patient at the kiosk.
        await asyncio.to_thread(ensure_writable_directory, self.settings.state_dir / CONSULTATION_STATE_DIR)
        self._connector = self._build_connector()
        self.durable = await self._open_durable(self._connector)
        self.retention = Retention(
            self.durable.trail,
            self.durable.outbox,
            self.settings.state_dir / CONSULTATION_STATE_DIR,
            RetentionPolicy.from_settings(self.settings),
            on_warning=lambda _: systemd.status(self.status),
        )
        self.retention.start()
        if self.settings.role is Role.PROVIDER:
            await self._start_provider()
        elif self.settings.role is Role.PATIENT:
            await self._start_patient()
        else:
            await self._start_nurse()
        if self.api is not None:
            try:
                await self.api.start()
            except ApiStartError as exc:
                raise StartError(str(exc)) from None
        log.info(
            "agent started role=%s user=%s status=%s", self.settings.role, self.settings.user_id, self.status
        )
        return self.status

    async def _open_durable(self, connector: Connector) -> Durable:
        settings = self.settings
        secret = settings.require_secret("cipher_key").get_secret_value()
        audit = trail_identity(settings)
        if not audit.device_keyed:
            log.warning(
                "audit trail keyed by the organization's cipher key: no device_credential is set, so "
                "another device holding that key could rewrite it"
            )
        try:
            return await Durable.open(
                settings.state_dir,
                secret=secret,
                previous_secrets=[key.get_secret_value() for key in settings.previous_cipher_keys],
                organization_id=settings.organization_id,
                device_id=audit.device_id,
                audit_keys=audit.keys,
                sink=connector.clinic if connector.has_clinic else None,
            )
        except DamagedStoreError as exc:
            # Names the file and the fix; the problem is a type or a count, never a record's content.
            raise StartError(f"{exc.path}: {exc.problem}: {exc.advice}") from None
        except AuditStoreError as exc:
            raise StartError(str(exc)) from None
        except OutboxFileError as exc:
            # Path and reason only: the file's content is sealed PHI.
            raise StartError(
                f"{exc.path}: {exc.reason}: move it aside to start with an empty outbox "
                "(what it held can no longer be sent)"
            ) from None

    async def preflight(self, *, skip: set[str] | frozenset[str] = frozenset()) -> PreflightReport:
        """Check the devices and the network now (``telehealth-agent preflight``'s report). On a
        kiosk the verdicts go to the provider as ``DEVICE_STATUS``: at once during a consultation,
        else with the next check-in."""
        from telehealth_client.preflight import run_preflight

        report = await run_preflight(self.settings, skip=skip)
        if self.patient is not None:
            await self.patient.report_devices(report.device_status())
        return report

    @property
    def emergency(self) -> EmergencyDesk | None:
        """The emergency desk of a provider's or nurse's cart (None on a kiosk)."""
        return self.provider.emergency if self.provider is not None else self._nurse_desk

    async def _start_provider(self) -> None:
        assert self._connector is not None
        self.provider = ProviderEndpoint(
            self._connector,
            self.hub,
            user_id=self.settings.user_id,
            department_id=self.settings.department_id,
            state_dir=self.settings.state_dir / CONSULTATION_STATE_DIR,
            durable=self.durable,
            media=media_options(self.settings),
            wildcard_subscribe=self.settings.wildcard_subscribe,
        )
        self.provider.notification_listeners.append(self._on_notification)
        self.bus = self.provider.bus
        self.bus.add_status_listener(self._on_bus_status)
        await self.provider.start()

    async def _start_patient(self) -> None:
        await self._start_bus()
        assert self._connector is not None
        self.patient = PatientEndpoint(
            self._connector,
            self.hub,
            state_dir=self.settings.state_dir / CONSULTATION_STATE_DIR,
            kiosk_id=self.settings.user_id,
            durable=self.durable,
            media=media_options(self.settings),
        )
        if self._connector.has_clinic:
            try:
                await self.patient.resume()
            except StateFileError as exc:
                # Kept on disk: the next start tries again; the kiosk stays usable meanwhile. The
                # path and the reason (never the file's content) tell whoever is on call what to fix.
                log.error(
                    "saved consultation not resumed error=%s file=%s reason=%s",
                    type(exc).__name__,
                    exc.path,
                    exc.reason,
                )
            except (ClinicError, SessionError) as exc:
                log.error("saved consultation not resumed error=%s", type(exc).__name__)

    async def _start_nurse(self) -> None:
        """A nurse's cart: its standing token (for its department), kept fresh like a provider's."""
        assert self._connector is not None
        if self._token is not None or not self._connector.has_clinic:
            await self._start_bus()  # a token given, or a relay without Access Manager
            return
        user_id = self.settings.user_id
        self.bus = self._connector.bus(user_id)
        self.bus.add_status_listener(self._on_bus_status)
        request = tokens.TokenRequest(user_id, "nurse", {"departmentId": self.settings.department_id})
        self._keeper = tokens.TokenKeeper(self._connector.clinic, self.bus, request, TokenAnnouncer(self.hub))
        # Refused or unreachable: start fails naming the clinic's reason (systemd restarts the
        # service later) instead of subscribing without a token and being denied forever.
        await self._keeper.start()
        self._notifications = await self.bus.subscribe(
            [channels.notification(user_id)], self._on_notification
        )
        assert self.durable is not None
        self.durable.attach(self.bus, denials=self._keeper.handle_access_denied)
        self._nurse_desk = EmergencyDesk(
            self.bus,
            self._connector.clinic,
            self.durable.outbox,
            self.durable.router,
            self.hub,
            user_id=user_id,
            department_id=self.settings.department_id,
            state_dir=self.settings.state_dir,
            sealer=self.durable.sealer,
            auditor=self.durable.auditor(user_id, "nurse"),
        )
        await self._nurse_desk.start()

    async def _start_bus(self) -> None:
        self.bus = PubNubBus(bus_config(self.settings, token=self._token))
        self.bus.add_status_listener(self._on_bus_status)
        if not self.idle:
            self._notifications = await self.bus.subscribe(
                [channels.notification(self.settings.user_id)], self._on_notification
            )

    def _on_bus_status(self, change: StatusChange) -> None:
        if change.status == ConnectionStatus.CONNECTED:
            self.connected.set()
        else:
            self.connected.clear()
        systemd.status(f"pub/sub {change.status}")

    async def _on_notification(self, envelope: Envelope) -> None:
        kind = envelope.message.get("type") if isinstance(envelope.message, dict) else None
        log.info("notification received type=%s", kind if isinstance(kind, str) else "unknown")
        for listener in list(self.notification_listeners):
            result = listener(envelope)
            if result is not None:
                await result

    async def aclose(self) -> None:
        """Stop in reverse order of start. Safe to call twice or after a failed start."""
        # First: nothing drives the parts while they stop. A part is let go only once its close
        # has returned.
        self.api = await _closed(self.api)
        self.patient = await _closed(self.patient)
        if self.provider is not None:
            self.provider = await _closed(self.provider)
            self.bus = None
        self._nurse_desk = await _closed(self._nurse_desk)
        self.retention = await _closed(self.retention)  # before the stores it prunes
        # Before the clinic client closes: the audit sink is reached through it.
        self.durable = await _closed(self.durable)
        self._keeper = await _closed(self._keeper)
        self._connector = await _closed(self._connector)
        self.hub.close()
        if self._notifications is not None:
            await self._notifications.close()
            self._notifications = None
        self.bus = await _closed(self.bus)
        await self._watchdog.aclose()  # last: the stop above may take a while, and is not a hang
        log.info("agent stopped")


class _Closes(Protocol):
    async def aclose(self) -> None: ...


_Part = TypeVar("_Part", bound=_Closes)


async def _closed(part: _Part | None) -> _Part | None:
    """Close ``part`` if there is one; always None, for the attribute that held it."""
    if part is not None:
        await part.aclose()
    return None


async def run_until_signalled(start: Callable[[], Awaitable[Any]], stop: Callable[[], Awaitable[Any]]) -> int:
    """Start, then wait for SIGINT/SIGTERM: the first drains and stops cleanly, a second exits at once.

    When ``start`` returns a string, systemd's READY carries it as the status line.
    """
    loop = asyncio.get_running_loop()
    stop_requested = asyncio.Event()
    signals_seen = 0

    def on_signal(signum: int) -> None:
        nonlocal signals_seen
        signals_seen += 1
        if signals_seen > 1:
            log.warning("second signal=%s: exiting now", signal.Signals(signum).name)
            os._exit(1)  # the operator insists: do not wait for a stuck drain
        log.info("signal=%s: stopping", signal.Signals(signum).name)
        stop_requested.set()

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, on_signal, signum)
    try:
        try:
            started = await start()
        except StartError as exc:
            log.error("start failed reason=%s", exc)
            return 1
        except Exception as exc:
            log.error("start failed error=%s", describe_exception(exc))
            return 1
        # READY once started, not once connected: the network may be down at boot and the
        # agent keeps reconnecting by itself; systemd must not kill it for that.
        systemd.ready(started if isinstance(started, str) else "started")
        await stop_requested.wait()
        systemd.stopping()
        return 0
    finally:
        try:
            await stop()
        except Exception as exc:  # stopping must go on: report it and finish the shutdown
            log.error("stop failed error=%s", describe_exception(exc))
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
