"""The composition root: builds the agent's parts, starts them in order, stops them in reverse."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import ssl
import stat
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from telehealth_client import signal_guard, systemd
from telehealth_client.api.app import ApiStartError, LocalApi
from telehealth_client.audit.identity import trail_identity
from telehealth_client.audit.trail import AuditStoreError, DamagedStoreError
from telehealth_client.config import MissingSecretError, Role, Settings
from telehealth_client.connector import Connector
from telehealth_client.consultation.patient import PatientEndpoint
from telehealth_client.consultation.provider import ProviderEndpoint
from telehealth_client.consultation.session import SessionError
from telehealth_client.consultation.start_policy import ONCE, Patience, StartPolicy
from telehealth_client.consultation.state_file import StateFileError
from telehealth_client.durability import Durable
from telehealth_client.durable.files import make_private_directory
from telehealth_client.durable.outbox import OutboxFileError
from telehealth_client.emergency.desk import EmergencyDesk
from telehealth_client.events import EventHub
from telehealth_client.logs import describe_exception
from telehealth_client.media.options import media_options
from telehealth_client.outbound import Outbound
from telehealth_client.protocol import channels
from telehealth_client.pubsub.bus import ConnectionStatus, Envelope, StatusChange, Subscription
from telehealth_client.pubsub.pubnub_bus import BusConfig, PubNubBus
from telehealth_client.retention import Retention, RetentionPolicy
from telehealth_client.security import tokens
from telehealth_client.security.clinic_client import ClinicClient, ClinicError
from telehealth_client.security.token_announcer import TokenAnnouncer
from telehealth_client.service_status import ServiceStatus
from telehealth_client.stop_budgets import LEAVE_SECONDS, budget, stop_clock
from telehealth_client.tasks import OwnedTasks

if TYPE_CHECKING:  # the preflight loads the device checks (numpy) when it runs, not before
    from telehealth_client.preflight import PreflightReport

log = logging.getLogger(__name__)


class StartError(Exception):
    """Why the agent cannot start, in words written for the person on call: no PHI, no secret,
    so the message itself is logged (other exceptions are logged by type and place only)."""


class StateDirError(StartError):
    """The state directory cannot hold the consultation's state: names the path and the reason."""


def ensure_writable_directory(directory: Path, *, private_from: Path | None = None) -> None:
    """Create ``directory`` (owner-only, with its missing parents) if needed and prove a file can be
    written there. ``private_from``: that directory and those below it down to ``directory``, when
    they exist already and are ours, are made owner-only too (a state directory made by hand with
    the umask's 0755 would show consultation IDs to every local user)."""
    try:
        make_private_directory(directory)
        if private_from is not None:
            for level in (directory, *directory.parents):
                _make_owner_only(level)
                if level == private_from:
                    break
        probe = tempfile.NamedTemporaryFile(dir=directory, prefix=".probe-")  # noqa: SIM115
        probe.close()
    except OSError as exc:
        raise StateDirError(f"state_dir: {directory}: cannot be written ({type(exc).__name__})") from None


def _make_owner_only(directory: Path) -> None:
    status = directory.stat()
    if status.st_uid == os.getuid() and status.st_mode & 0o077:
        directory.chmod(0o700)
        log.warning("state_dir: %s was mode %o: made 0700", directory, stat.S_IMODE(status.st_mode))


def bus_config(
    settings: Settings, *, token: str | None = None, outbound: Outbound | None = None
) -> BusConfig:
    """The bus's view of the settings. Without a subscribe key the agent cannot start.

    Raises MissingSecretError (a ValueError) naming every place a missing key was looked for.
    ``outbound``: the route built once for the agent (default: made from the settings).
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
        outbound=outbound or Outbound.from_settings(settings),
    )


NotificationHandler = Callable[[Envelope], Awaitable[None] | None]


CONSULTATION_STATE_DIR = "consultation"


class Agent:
    """One kiosk or cart agent. ``start`` (or ``serve``) then ``aclose``; or ``run`` until a signal.

    It composes the event hub (``hub``) and the role's endpoint: ``patient`` (a
    ``PatientEndpoint``: ``check_in``, ``leave``, ``report_devices``) or ``provider`` (a
    ``ProviderEndpoint``, which owns the provider's bus) or ``nurse`` (its standing token, kept
    fresh, and its notification channel). A consultation saved in
    ``state_dir/consultation`` is resumed on start.

    ``start``: everything, each network step tried once (a failure raises). ``serve`` (``telehealth-agent
    run``): the local parts and the API, then the network in the background, retried until it is up
    (``consultation.start_policy.Patience``); ``failure()`` ends only if that bring-up fails for a
    reason no retry cures. ``status``: the one status line (``service_status``).

    ``serve_api``: also serve the local HTTP API (``api``, ``telehealth_client.api``) when the
    settings' ``api_enabled`` is on (``telehealth-agent run`` does); it then needs ``api_token``.
    """

    def __init__(self, settings: Settings, *, token: str | None = None, serve_api: bool = False) -> None:
        self.settings = settings
        self._token = token
        self._serve_api = serve_api and settings.api_enabled
        # The local API: made before the parts start (its event stream follows the hub from then),
        # listening before the network is brought up, stopped before the parts.
        self.api: LocalApi | None = None
        self.bus: PubNubBus | None = None
        self._notifications: Subscription | None = None
        # Set while the bus is connected; tests and the API wait on it.
        self.connected = asyncio.Event()
        self.notification_listeners: list[NotificationHandler] = []
        self.hub = EventHub()
        self.patient: PatientEndpoint | None = None
        # Set once its start is over: the API answers 503 ``starting`` until then.
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
        # The status line's parts (systemd's STATUS=, the log, the API's status).
        self._service_status = ServiceStatus(settings.origin)
        # The network's bring-up under ``serve`` and the status line's hub follower.
        self._tasks = OwnedTasks()
        self._bringing_up = False
        self._started_logged = False
        self._failed: asyncio.Future[str] | None = None
        # How every outbound connection leaves (the HTTPS proxy, the CA bundle), built once.
        self._outbound = Outbound.from_settings(settings)

    @property
    def idle(self) -> bool:
        """A patient kiosk between consultations: no token, no subscription, nothing to listen to.

        The clinic grants patient tokens per consultation, so asking for one now could only be
        refused, and subscribing without one only denied and retried forever.
        """
        if self.settings.role is not Role.PATIENT:
            return False
        return self.patient.idle if self.patient is not None else self._token is None

    @property
    def starting(self) -> bool:
        """The role's endpoint is being brought up (the network): not up yet."""
        return self._bringing_up

    def _build_connector(self) -> Connector:
        credential = self.settings.device_credential
        clinic = (
            None
            if credential is None
            else ClinicClient(
                self.settings.clinic_url,
                credential.get_secret_value(),
                timeout_seconds=self.settings.request_timeout_seconds,
                outbound=self._outbound,
            )
        )
        return Connector(bus_config(self.settings, outbound=self._outbound), clinic)

    @property
    def status(self) -> str:
        """One line for systemd's STATUS, the logs and the API: what it waits for, the consultation's
        state, its call's status and the pub/sub connection (``idle``: a kiosk between patients)."""
        held: list[tuple[str, str]] = []
        session = self.patient.session if self.patient is not None else None
        if session is not None:
            held = [(session.consultation_id, str(session.consultation.state))]
            pubsub = session.bus.status
        else:
            pubsub = self.bus.status if self.bus is not None else ConnectionStatus.STOPPED
            if self.bus is None and self._bringing_up:
                pubsub = ConnectionStatus.CONNECTING  # its bus is being made
        if self.provider is not None:
            sessions = sorted(self.provider.sessions.items())
            held = [(cid, str(s.consultation.state)) for cid, s in sessions if not s.closed]
        line = self._service_status.line(held, str(pubsub), idle=self.idle)
        warning = self.retention.warning if self.retention is not None else None
        return line if warning is None else f"{line}; storage: {warning}"

    async def start(self) -> str:
        """Build and start every part, each network step tried once (a part that cannot start
        raises); returns the status line."""
        await self._open()
        self._bringing_up = self.settings.role is not Role.PATIENT
        await self._bring_up(ONCE)
        return self.status

    async def serve(self) -> str:
        """Start as a service: the local parts and the API now, the network in an owned background
        task that retries until it is up and says what it waits for. Returns the status line
        (systemd's READY carries it) once the API listens."""
        await self._open()
        assert self.durable is not None
        # The bring-up asks for the audit sink's head again and says so (``_reach_audit_sink``).
        self.durable.trail.drive_sink_head()
        # A kiosk is ready idle: a saved consultation resumes behind it. A cart's endpoint is not
        # up before its token and connection: its routes answer 503 until then.
        kiosk = self.settings.role is Role.PATIENT
        if not kiosk:
            self._service_status.starting(f"starting the {self.settings.role}'s endpoint")
            self._bringing_up = True
        self._failed = asyncio.get_running_loop().create_future()
        self._tasks.spawn(self._bring_up_in_background(self._failed), name="agent-bring-up")
        settings = self.settings
        log.info("agent ready role=%s user=%s status=%s", settings.role, settings.user_id, self.status)
        if kiosk:
            self._log_started()
        return self.status

    async def failure(self) -> str:
        """Ends only when ``serve``'s bring-up failed for a reason no retry cures: that reason.

        Awaited once READY went out (``run_until_signalled``): the status line is said again first,
        since READY carried it as ``serve`` returned it, and the bring-up may have said more since
        (a kiosk whose clinic refused it, before READY)."""
        self._service_status.ready_sent()
        self._refresh_status()
        if self._failed is None:
            await asyncio.Event().wait()  # not serving: nothing fails in the background
        assert self._failed is not None
        return await asyncio.shield(self._failed)

    async def _open(self) -> None:
        """The local parts, and the API listening: no network needed."""
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
        await asyncio.to_thread(
            ensure_writable_directory,
            self.settings.state_dir / CONSULTATION_STATE_DIR,
            private_from=self.settings.state_dir,
        )
        try:
            await self._outbound.prepare()
        except (OSError, ssl.SSLError) as exc:  # checked at load: changed on disk since
            reason = f"cannot be loaded ({type(exc).__name__})"
            raise StartError(f"ca_bundle: {self.settings.ca_bundle}: {reason}") from None
        self._connector = self._build_connector()
        self.durable = await self._open_durable(self._connector)
        self.retention = Retention(
            self.durable.trail,
            self.durable.outbox,
            self.settings.state_dir / CONSULTATION_STATE_DIR,
            RetentionPolicy.from_settings(self.settings),
            on_warning=lambda _: self._refresh_status(),
        )
        self.retention.start()
        self._tasks.spawn(self._follow_hub(), name="agent-status")
        if self.settings.role is Role.PATIENT:
            await self._build_patient()  # local only: the kiosk's routes work at once
        if self.api is not None:
            try:
                await self.api.start()
            except ApiStartError as exc:
                raise StartError(str(exc)) from None

    async def _bring_up(self, policy: StartPolicy) -> None:
        """The role's network parts: the token, the subscriptions, what was missed meanwhile."""
        if self.settings.role is Role.PROVIDER:
            await self._start_provider(policy)
        elif self.settings.role is Role.PATIENT:
            await self._resume_patient(policy)
        else:
            await self._start_nurse(policy)
        await self._reach_audit_sink(policy)
        self._bringing_up = False
        self._service_status.starting(None)
        self._log_started()
        self._refresh_status()

    def _log_started(self) -> None:
        if not self._started_logged:
            self._started_logged = True
            settings = self.settings
            log.info("agent started role=%s user=%s status=%s", settings.role, settings.user_id, self.status)

    async def _bring_up_in_background(self, failed: asyncio.Future[str]) -> None:
        settings = self.settings
        patience = Patience(
            self._waiting,
            origin=settings.origin,
            clinic_url=settings.clinic_url,
            low=settings.reconnect_min_seconds,
            high=settings.reconnect_max_seconds,
        )
        try:
            await self._bring_up(patience)
        except Exception as exc:  # not the network's (that is retried): a damaged file, our bug
            reason = str(exc) if isinstance(exc, StartError) else describe_exception(exc)
            log.error("start failed reason=%s", reason)
            if not failed.done():
                failed.set_result(reason)

    def _waiting(self, text: str | None) -> None:
        self._service_status.waiting(text)
        self._refresh_status()

    def _refresh_status(self) -> None:
        self._service_status.publish(self.status)

    async def _follow_hub(self) -> None:
        """Keeps the status line current as consultations and calls move."""
        async with self.hub.subscribe() as stream:
            async for event in stream:
                if self._service_status.observe(event):
                    self._refresh_status()

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

    async def _start_provider(self, policy: StartPolicy) -> None:
        assert self._connector is not None
        provider = ProviderEndpoint(
            self._connector,
            self.hub,
            user_id=self.settings.user_id,
            department_id=self.settings.department_id,
            state_dir=self.settings.state_dir / CONSULTATION_STATE_DIR,
            durable=self.durable,
            media=media_options(self.settings),
            wildcard_subscribe=self.settings.wildcard_subscribe,
        )
        provider.notification_listeners.append(self._on_notification)
        self.bus = provider.bus
        self._listen_to(self.bus)
        try:
            await provider.start(policy)
        except BaseException:  # cancelled by a stop, or failed: nothing of it may outlive this
            self.bus = None
            await provider.aclose()
            raise
        self.provider = provider

    async def _build_patient(self) -> None:
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

    async def _resume_patient(self, policy: StartPolicy) -> None:
        assert self._connector is not None and self.patient is not None
        if not self._connector.has_clinic:
            return
        try:
            await policy.attempt("the saved consultation", self.patient.resume, verdicts_end=True)
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

    async def _reach_audit_sink(self, policy: StartPolicy) -> None:
        """The audit sink's head, when the trail could not read it at open: the clinic unreachable
        or refusing this device's credential. Said and retried as any start step (``policy``); a
        trail begun meanwhile is placed after the head once read (``AuditTrail.reach_sink``).

        On a kiosk the first attempt is the failure of the trail's own request (no second request
        for it): one that reached the clinic asks it once, one that did not says so at once. A cart
        asks afresh: its start has just reached the clinic for its token."""
        trail = self.durable.trail if self.durable is not None else None
        if trail is None or trail.head_error is None:
            return
        first = trail.head_error if self.settings.role is Role.PATIENT else None

        async def read_head() -> None:
            nonlocal first
            if first is not None:
                error, first = first, None
                raise error
            await trail.reach_sink()

        try:
            await policy.attempt("the audit trail (the sink's head)", read_head)
        except ClinicError as exc:  # ONCE: the trail goes on from its state directory
            why = f"HTTP {exc.status}" if exc.status is not None else exc.reason
            log.warning("audit sink head not read: the trail goes on from the state directory (%s)", why)
        except DamagedStoreError as exc:  # behind the sink: a rollback, refused as at start
            raise StartError(f"{exc.path}: {exc.problem}: {exc.advice}") from None

    async def _start_nurse(self, policy: StartPolicy) -> None:
        """A nurse's cart: its standing token (for its department), kept fresh like a provider's."""
        assert self._connector is not None
        if self._token is not None or not self._connector.has_clinic:
            await self._start_bus()  # a token given, or a relay without Access Manager
            return
        user_id = self.settings.user_id
        self.bus = self._connector.bus(user_id)
        self._listen_to(self.bus)
        request = tokens.TokenRequest(user_id, "nurse", {"departmentId": self.settings.department_id})
        self._keeper = tokens.TokenKeeper(self._connector.clinic, self.bus, request, TokenAnnouncer(self.hub))
        # Not subscribed without a token: it would only be denied. ONCE: a refusal raises, naming
        # the clinic's reason; Patience: retried, and said.
        await policy.attempt("the nurse's standing token", self._keeper.start)
        self._notifications = await self.bus.subscribe(
            [channels.notification(user_id)], self._on_notification
        )
        assert self.durable is not None
        self.durable.attach(self.bus, denials=self._keeper.handle_access_denied)
        desk = EmergencyDesk(
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
        try:
            await desk.start()
        except BaseException:
            await desk.aclose()
            raise
        self._nurse_desk = desk

    async def _start_bus(self) -> None:
        self.bus = PubNubBus(bus_config(self.settings, token=self._token, outbound=self._outbound))
        self._listen_to(self.bus)
        if not self.idle:
            self._notifications = await self.bus.subscribe(
                [channels.notification(self.settings.user_id)], self._on_notification
            )

    def _listen_to(self, bus: PubNubBus) -> None:
        bus.add_status_listener(self._on_bus_status)
        bus.add_retry_listener(self._on_bus_retry)

    def _on_bus_status(self, change: StatusChange) -> None:
        if change.status == ConnectionStatus.CONNECTED:
            self.connected.set()
        else:
            self.connected.clear()
        self._service_status.bus_changed(change)
        self._refresh_status()

    def _on_bus_retry(self, change: StatusChange) -> None:
        self._service_status.bus_attempt(change)
        self._refresh_status()

    async def _on_notification(self, envelope: Envelope) -> None:
        kind = envelope.message.get("type") if isinstance(envelope.message, dict) else None
        log.info("notification received type=%s", kind if isinstance(kind, str) else "unknown")
        for listener in list(self.notification_listeners):
            result = listener(envelope)
            if result is not None:
                await result

    async def aclose(self) -> None:
        """Stop in reverse order of start. Safe to call twice or after a failed start.

        The graceful stop (SIGTERM): a call ends with ``end-call``, the chat outbox and the audit
        trail are flushed to PubNub and the sink, the consultation's channels are left and its
        state file kept (the next start resumes it); each step waits on the network within its
        budget and all of them within the stop's one deadline (``stop_budgets``), what was not
        sent stays on disk.
        """
        began = time.monotonic()
        with stop_clock():
            await self._stop()
        await self._watchdog.aclose()  # last: the stop above may take a while, and is not a hang
        log.info("agent stopped seconds=%.2f", time.monotonic() - began)

    async def _stop(self) -> None:
        self._service_status.close()  # from here on the stop says what it does
        # First: nothing drives the parts while they stop. A part is let go only once its close
        # has returned.
        self.api = await _closed(self.api)
        await self._tasks.cancel_all()  # the bring-up (its part closes itself) and the status line
        self.patient = await _closed(self.patient)
        if self.provider is not None:
            self.provider = await _closed(self.provider)
            self.bus = None
        self._nurse_desk = await _closed(self._nurse_desk)
        self.retention = await _closed(self.retention)  # before the stores it prunes
        # Two waits on different peers, side by side: the audit sink's last deliveries (before
        # the clinic client closes: the sink is reached through it) and the notification
        # channel's presence leave.
        await _side_by_side(self._close_durable(), self._leave_notifications())
        self._keeper = await _closed(self._keeper)
        self._connector = await _closed(self._connector)
        self.hub.close()
        self.bus = await _closed(self.bus)

    async def _close_durable(self) -> None:
        self.durable = await _closed(self.durable)

    async def _leave_notifications(self) -> None:
        if self._notifications is not None:
            notifications, self._notifications = self._notifications, None
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(budget(LEAVE_SECONDS)):  # a presence leave: never waited on longer
                    await notifications.close()


class _Closes(Protocol):
    async def aclose(self) -> None: ...


_Part = TypeVar("_Part", bound=_Closes)
_T = TypeVar("_T")


async def _side_by_side(*steps: Awaitable[None]) -> None:
    """Run ``steps`` at once, each to its end; then raise the first failure, if any."""
    for result in await asyncio.gather(*steps, return_exceptions=True):
        if isinstance(result, BaseException):
            raise result


async def _closed(part: _Part | None) -> _Part | None:
    """Close ``part`` if there is one; always None, for the attribute that held it."""
    if part is not None:
        await part.aclose()
    return None


async def run_until_signalled(
    start: Callable[[], Awaitable[Any]],
    stop: Callable[[], Awaitable[Any]],
    *,
    failure: Callable[[], Awaitable[str]] | None = None,
) -> int:
    """Start, then wait for SIGINT/SIGTERM: the first stops cleanly (exit 0), during the start too
    (it is cancelled); a second exits at once (1). A start that fails exits 1, never READY; so does
    ``failure()`` returning (what a background start could not get past).

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
    early = signal_guard.first()
    if early is not None:  # came before the loop's handler (while importing): stop as if now
        on_signal(early)
    try:
        try:
            started = await _unless_stopped(start(), stop_requested)
        except StartError as exc:
            log.error("start failed reason=%s", exc)
            return 1
        except Exception as exc:
            log.error("start failed error=%s", describe_exception(exc))
            return 1
        if stop_requested.is_set():  # a signal came during the start, which was cancelled
            systemd.stopping()
            return 0
        # READY once the API listens, not once connected: the network may be down at boot and
        # the agent keeps trying by itself (its STATUS= says what it waits for).
        systemd.ready(started if isinstance(started, str) else "started")
        failed = await _unless_stopped(failure(), stop_requested) if failure is not None else None
        if failed is None:
            await stop_requested.wait()
        systemd.stopping()
        return 0 if failed is None else 1
    finally:
        try:
            await stop()
        except Exception as exc:  # stopping must go on: report it and finish the shutdown
            log.error("stop failed error=%s", describe_exception(exc))
        # Until the process is gone: a first signal is noted (the stop is done), a second exits 1.
        # Blocked meanwhile, so that none meets the default handler (death by 143) in between.
        held = signal.pthread_sigmask(signal.SIG_BLOCK, signal_guard.SIGNALS)
        try:
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(signum)
            signal_guard.install(already=signal.SIGTERM if signals_seen else None)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, held)


async def _unless_stopped(work: Awaitable[_T], stop_requested: asyncio.Event) -> _T | None:
    """``work``'s result, or None once a stop is requested first (``work`` is then cancelled)."""
    task = asyncio.ensure_future(work)
    stopping = asyncio.ensure_future(stop_requested.wait())
    try:
        await asyncio.wait({task, stopping}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopping.cancel()
        if not task.done():
            task.cancel()
        await asyncio.gather(task, stopping, return_exceptions=True)
    if task.cancelled():
        return None
    return task.result()
