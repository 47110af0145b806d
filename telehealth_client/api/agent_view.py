"""What the API reads of the agent: ``telehealth_client.agent.Agent`` has all of it (the API does
not import the agent, which starts the API)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from telehealth_client.config import Settings
    from telehealth_client.consultation.patient import PatientEndpoint
    from telehealth_client.consultation.provider import ProviderEndpoint
    from telehealth_client.durability import Durable
    from telehealth_client.emergency.desk import EmergencyDesk
    from telehealth_client.events import EventHub
    from telehealth_client.preflight import PreflightReport
    from telehealth_client.pubsub.pubnub_bus import PubNubBus


class AgentView(Protocol):
    @property
    def settings(self) -> Settings: ...

    @property
    def hub(self) -> EventHub: ...

    @property
    def patient(self) -> PatientEndpoint | None: ...

    @property
    def provider(self) -> ProviderEndpoint | None: ...

    @property
    def emergency(self) -> EmergencyDesk | None: ...

    @property
    def bus(self) -> PubNubBus | None: ...

    @property
    def durable(self) -> Durable | None: ...

    @property
    def idle(self) -> bool: ...

    @property
    def starting(self) -> bool:
        """The role's endpoint is being brought up (the network): its routes answer 503."""
        ...

    @property
    def status(self) -> str: ...

    async def preflight(self, *, skip: set[str] | frozenset[str] = ...) -> PreflightReport: ...
