"""What a call reads of its consultation, as an interface: the call depends on no consultation code.

The consultation's ``ConsultationSession`` provides it (``consultation/session.py``); tests may
give their own. The call reads the consultation's IDs, roles and state, publishes on the session's
bus, follows the session's messages and state changes, and asks who takes part.

Public API: ``CallConsultation`` and ``CallSession`` (protocols).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from telehealth_client.protocol import messages
from telehealth_client.protocol.messages import ConsultationState
from telehealth_client.pubsub.bus import Bus, Envelope


class CallConsultation(Protocol):
    @property
    def consultation_id(self) -> str: ...

    @property
    def provider_id(self) -> str: ...

    @property
    def patient_id(self) -> str: ...

    @property
    def user_id(self) -> str: ...  # this endpoint's own

    @property
    def role(self) -> str: ...  # this endpoint's own: patient or provider

    @property
    def state(self) -> ConsultationState: ...


class CallSession(Protocol):
    @property
    def consultation(self) -> CallConsultation: ...

    @property
    def bus(self) -> Bus: ...

    @property
    def provider_present(self) -> bool:
        """The consultation's provider has joined and not yet ended it (offers are taken)."""
        ...

    def is_participant(self, user_id: str) -> bool:
        """Whether ``user_id``'s messages belong to the consultation (not a removed guest)."""
        ...

    def add_message_handler(
        self, handler: Callable[[messages.Message, Envelope], Awaitable[None] | None]
    ) -> Callable[[], None]: ...

    def add_state_listener(self, listener: Callable[[Any], None]) -> Callable[[], None]: ...
