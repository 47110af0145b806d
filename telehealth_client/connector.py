"""What a patient or provider endpoint needs from its surroundings: buses and the clinic.

``Connector`` builds a ``PubNubBus`` under any user ID from one ``BusConfig`` template (the
patient endpoint opens one per consultation, under the patient's ID) and holds the endpoint's
``ClinicClient`` (tokens, invitations, revocations). Tests and the agent use the same one.
"""

from __future__ import annotations

from dataclasses import replace

from telehealth_client.protocol.channels import validate_id
from telehealth_client.pubsub.pubnub_bus import BusConfig, PubNubBus
from telehealth_client.security.clinic_client import ClinicClient


class Connector:
    def __init__(self, template: BusConfig, clinic: ClinicClient | None) -> None:
        self._template = template
        self._clinic = clinic

    def bus(self, user_id: str) -> PubNubBus:
        """A new bus under ``user_id``, with no token yet (its owner's keeper sets one)."""
        return PubNubBus(replace(self._template, user_id=validate_id(user_id, "userId"), token=None))

    @property
    def clinic(self) -> ClinicClient:
        """The clinic backend, as this device (its credential); ValueError when none is configured."""
        if self._clinic is None:
            raise ValueError("device_credential: is required to reach the clinic backend")
        return self._clinic

    @property
    def has_clinic(self) -> bool:
        return self._clinic is not None

    async def aclose(self) -> None:
        if self._clinic is not None:
            await self._clinic.aclose()
