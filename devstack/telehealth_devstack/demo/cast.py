"""The demo's cast: the development stack and three agents on it, built and closed in order.

The stack (relay enforcing Access Manager, coturn, the clinic stand-in) runs in this process with
two providers of one department, both on call for it. Each agent is the real endpoint with its
own ``EventHub``, its own ``PubNubBus`` (encrypted with the stack's cipher key), its own clinic
client holding its own device credential and its own ``Durable`` storage (outbox and audit
trail in ``state_dir/<user>``, sealed with the stack's cipher key, audit events posted to the
clinic's sink with that agent's credential): the kiosk (patient endpoint, idle until check-in),
the consultation's provider and a specialist. Each agent's hub is watched by a ``Witness``.

Public API:

- ``Cast(state_dir, media=True, patient_token_limit=...)``: ``await start_stack()``,
  ``await start_agents(patient_origin=None)``
  (``patient_origin``: the kiosk's way to the relay, for a hop that can be cut; default the
  relay itself), ``await aclose()`` (agents, then the stack; safe after a failed start),
  ``await close_agents()`` (the agents only: ``demo --keep-running`` keeps the stack).
  ``patient_token_limit``: the clinic's limit on the kiosk's patient token minting (a benchmark
  checking in many patients raises it).
- ``stack``, ``patient``, ``provider``, ``specialist``, ``witnesses`` and ``durables`` (by agent
  name), ``kiosk_clinic`` (the kiosk's credential: records consent), ``specialist_clinic``
  (remembers the tokens it was given for a consultation, in memory only), ``agent_ids`` (the
  user IDs each agent acts as, for telling their audit events apart).
- ``bus(user_id, token)``: a further bus on the stack, closed with the cast.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Final

from telehealth_client import events
from telehealth_client.audit.trail import ChainKeys
from telehealth_client.connector import Connector
from telehealth_client.consultation.patient import PatientEndpoint
from telehealth_client.consultation.provider import ProviderEndpoint
from telehealth_client.durability import Durable
from telehealth_client.media.consultation_call import MediaOptions
from telehealth_client.media.worker import Devices
from telehealth_client.protocol import channels
from telehealth_client.pubsub.pubnub_bus import BusConfig, PubNubBus
from telehealth_client.security.clinic_client import ClinicClient, TokenGrant
from telehealth_devstack.clinic import DEFAULT_PATIENT_TOKEN_LIMIT, RateLimit
from telehealth_devstack.demo.witness import Witness
from telehealth_devstack.generated_devices import write_devices
from telehealth_devstack.stack import DevStack

PROVIDER: Final = "dr-demo"
SPECIALIST: Final = "dr-specialist"
DEPARTMENT: Final = "er"
KIOSK: Final = "kiosk-demo"
PATIENT: Final = "pat-demo"
APPOINTMENT: Final = "appt-demo"
CONSULTATION: Final = channels.consultation(PROVIDER, PATIENT)
# Where each agent keeps its consultation state, beside its outbox and audit trail (as an Agent).
CONSULTATION_STATE: Final = "consultation"


class RememberingClinic(ClinicClient):
    """The clinic client, keeping the tokens granted for a consultation (to show one revoked).

    Kept in memory only; never printed or logged.
    """

    def __init__(self, base_url: str, device_credential: str) -> None:
        super().__init__(base_url, device_credential)
        self._consultation_tokens: dict[str, str] = {}

    async def request_token(self, user_id: str, role: str, **context: str | None) -> TokenGrant:
        grant = await super().request_token(user_id, role, **context)
        consultation = context.get("consultationChannel")
        if consultation is not None:
            self._consultation_tokens[consultation] = grant.token
        return grant

    def consultation_token(self, consultation_id: str) -> str | None:
        return self._consultation_tokens.get(consultation_id)


def media_options(directory: Path) -> MediaOptions:
    """Synthetic devices for one demo agent's media child (``generated_devices``)."""
    generated = write_devices(directory)
    devices = Devices(
        camera=generated.camera,
        camera_is_file=True,
        microphone=generated.microphone,
        speaker=generated.speaker,
    )
    # The demo prints its own lines: the media children say only what goes wrong.
    return MediaOptions(devices, {**os.environ, **generated.environment, "TELEHEALTH_LOG_LEVEL": "WARNING"})


class Cast:
    def __init__(
        self,
        state_dir: Path,
        *,
        media: bool = True,
        patient_token_limit: RateLimit = DEFAULT_PATIENT_TOKEN_LIMIT,
    ) -> None:
        self._state_dir = state_dir
        self._media = media  # the video call (a media child per agent); benchmarks may leave it out
        self.stack = DevStack(
            providers=(PROVIDER, SPECIALIST), kiosks=(KIOSK,), patient_token_limit=patient_token_limit
        )
        self._stack_started = False
        self.witnesses: dict[str, Witness] = {}
        self.durables: dict[str, Durable] = {}
        # Agent name -> the user IDs it acts as (a kiosk acts as the patient it checked in).
        self.agent_ids: dict[str, frozenset[str]] = {
            "patient": frozenset({KIOSK, PATIENT}),
            "provider": frozenset({PROVIDER}),
            "specialist": frozenset({SPECIALIST}),
        }
        self._closers: list[Callable[[], Awaitable[None]]] = []
        self._patient: PatientEndpoint | None = None
        self._provider: ProviderEndpoint | None = None
        self._specialist: ProviderEndpoint | None = None
        self._kiosk_clinic: ClinicClient | None = None
        self._specialist_clinic: RememberingClinic | None = None

    # -- the parts, once started ---------------------------------------------------------------------

    @property
    def patient(self) -> PatientEndpoint:
        assert self._patient is not None, "agents not started"
        return self._patient

    @property
    def provider(self) -> ProviderEndpoint:
        assert self._provider is not None, "agents not started"
        return self._provider

    @property
    def specialist(self) -> ProviderEndpoint:
        assert self._specialist is not None, "agents not started"
        return self._specialist

    @property
    def kiosk_clinic(self) -> ClinicClient:
        assert self._kiosk_clinic is not None, "agents not started"
        return self._kiosk_clinic

    @property
    def specialist_clinic(self) -> RememberingClinic:
        assert self._specialist_clinic is not None, "agents not started"
        return self._specialist_clinic

    # -- start and stop -----------------------------------------------------------------------------

    async def start_stack(self) -> None:
        await self.stack.start()
        self._stack_started = True

    async def start_agents(self, *, patient_origin: str | None = None) -> None:
        """The kiosk (idle: no token, no bus), then the provider and the specialist (standing
        tokens, subscribed and connected when this returns)."""
        self._kiosk_clinic = self._clinic(self.stack.kiosk_credential(KIOSK))
        kiosk = self._template(KIOSK)
        if patient_origin is not None:
            kiosk = replace(kiosk, origin=patient_origin)
        self._patient = PatientEndpoint(
            Connector(kiosk, self._kiosk_clinic),
            self._hub("patient"),
            state_dir=self._state_dir / KIOSK / CONSULTATION_STATE,
            kiosk_id=KIOSK,
            durable=await self._durable("patient", KIOSK, self._kiosk_clinic),
            media=await self._media_options("patient"),
        )
        self._closers.append(self._patient.aclose)
        self._provider = await self._start_provider(
            "provider", PROVIDER, self._clinic(self.stack.users[PROVIDER].credential)
        )
        self._specialist_clinic = RememberingClinic(self._clinic_url, self.stack.users[SPECIALIST].credential)
        self._closers.append(self._specialist_clinic.aclose)
        self._specialist = await self._start_provider("specialist", SPECIALIST, self._specialist_clinic)

    async def _durable(self, name: str, user_id: str, clinic: ClinicClient) -> Durable:
        """The agent's outbox and audit trail; closed after its endpoint, before its clinic client
        (the audit sink is reached through it)."""
        durable = await Durable.open(
            self._state_dir / user_id,
            secret=self.stack.keys.cipher_key,
            organization_id=self.stack.organization_id,
            device_id=user_id,
            # The trail is keyed with the device's own credential, as an agent's is.
            audit_keys=ChainKeys(
                self.stack.kiosk_credential(KIOSK)
                if user_id == KIOSK
                else self.stack.users[user_id].credential
            ),
            sink=clinic,
        )
        self._closers.append(durable.aclose)
        self.durables[name] = durable
        return durable

    async def _media_options(self, name: str) -> MediaOptions | None:
        if not self._media or name == "specialist":
            return None
        return await asyncio.to_thread(media_options, self._state_dir / "media" / name)

    async def _start_provider(self, name: str, user_id: str, clinic: ClinicClient) -> ProviderEndpoint:
        durable = await self._durable(name, user_id, clinic)
        endpoint = ProviderEndpoint(
            Connector(self._template(user_id), clinic),
            self._hub(name),
            user_id=user_id,
            department_id=self.stack.users[user_id].department_id,
            state_dir=self._state_dir / user_id / CONSULTATION_STATE,
            durable=durable,
            media=await self._media_options(name),
        )
        self._closers.append(endpoint.aclose)
        await endpoint.start()
        return endpoint

    def bus(self, user_id: str, token: str | None) -> PubNubBus:
        bus = PubNubBus(replace(self._template(user_id), token=token))
        self._closers.append(bus.aclose)
        return bus

    async def close_agents(self) -> None:
        """Everything built on the stack, newest first, the stack left running; every closer runs
        even if one fails (the first failure is raised)."""
        failure: BaseException | None = None
        for closer in reversed(self._closers):
            try:
                await closer()
            except Exception as exc:
                failure = failure or exc
        self._closers.clear()
        if failure is not None:
            raise failure

    async def aclose(self) -> None:
        """Everything built, newest first, then the stack (stopped even if a closer fails)."""
        try:
            await self.close_agents()
        finally:
            if self._stack_started:
                self._stack_started = False
                await self.stack.stop()

    # -- building -----------------------------------------------------------------------------------

    @property
    def _clinic_url(self) -> str:
        assert self.stack.clinic is not None, "stack not started"
        return self.stack.clinic.url

    def _clinic(self, credential: str) -> ClinicClient:
        client = ClinicClient(self._clinic_url, credential)
        self._closers.append(client.aclose)
        return client

    def _hub(self, name: str) -> events.EventHub:
        hub = events.EventHub()
        witness = Witness(name, hub)
        self.witnesses[name] = witness

        async def close() -> None:
            await witness.aclose()
            hub.close()

        self._closers.append(close)
        return hub

    def _template(self, user_id: str) -> BusConfig:
        return self.stack.bus_config(user_id, request_timeout_seconds=5.0)
