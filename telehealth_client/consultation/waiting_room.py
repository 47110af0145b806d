"""What a provider's waiting room says at start: which check-ins still wait (read from history).

A restarted cart reads its waiting room's history. A check-in is dropped when a newer one of the
same consultation superseded it, when the patient cancelled on the waiting room after it (it left
before anyone joined), or when the consultation channel shows its end or cancellation after it
(else the cart would show it in the queue and subscribe to it). Messages that cannot be decoded are
handed back to be logged as drops. The consultation channels are read a few at a time.

Public API: ``await waiting_check_ins(bus, provider_id, room) -> WaitingRoomReplay``;
``await ended_since(bus, provider_id, consultation_id, timetoken) -> str | None``;
``WAITING_ROOM_HISTORY``, ``REPLAY_CONCURRENCY``.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Final

from telehealth_client.logs import describe_exception
from telehealth_client.protocol import channels
from telehealth_client.protocol.channels import ConsultationChannels
from telehealth_client.protocol.messages import (
    ConsultationCancelled,
    ConsultationEnded,
    Drop,
    PatientCheckedIn,
    decode,
)
from telehealth_client.pubsub.bus import Bus, Envelope

log = logging.getLogger(__name__)

WAITING_ROOM_HISTORY: Final = 1000  # check-ins read back at start (the bus pages history itself)
REPLAY_CONCURRENCY: Final = 8  # consultation channels read at once while the room is replayed


@dataclass
class WaitingRoomReplay:
    """The latest check-in of each consultation not cancelled on the waiting room since, in
    history order, and the envelopes that could not be decoded."""

    check_ins: list[tuple[PatientCheckedIn, Envelope]] = field(default_factory=list)
    undecodable: list[Envelope] = field(default_factory=list)


async def waiting_check_ins(bus: Bus, provider_id: str, room: str) -> WaitingRoomReplay:
    history = await bus.history(room, limit=WAITING_ROOM_HISTORY)
    latest: dict[str, tuple[PatientCheckedIn, Envelope]] = {}
    replay = WaitingRoomReplay()
    for envelope in history:
        decoded = decode(envelope.channel, envelope.message, envelope.publisher)
        if isinstance(decoded, PatientCheckedIn):
            latest[decoded.consultation_id] = (decoded, envelope)
        elif isinstance(decoded, ConsultationCancelled) and envelope.publisher is not None:
            cid = channels.consultation(provider_id, envelope.publisher)
            found = latest.get(cid)
            if found is not None and found[1].timetoken < envelope.timetoken:
                del latest[cid]  # the patient left before anyone joined
                log.info("waiting room replay dropped consultation=%s reason=cancelled", cid)
        elif isinstance(decoded, Drop):
            replay.undecodable.append(envelope)
    replay.check_ins = list(latest.values())
    return replay


async def still_waiting(
    bus: Bus, provider_id: str, check_ins: list[tuple[PatientCheckedIn, Envelope]]
) -> list[tuple[PatientCheckedIn, Envelope]]:
    """Those of ``check_ins`` whose consultation channel shows no end or cancellation since."""
    gate = asyncio.Semaphore(REPLAY_CONCURRENCY)

    async def over(item: tuple[PatientCheckedIn, Envelope]) -> str | None:
        async with gate:
            return await ended_since(bus, provider_id, item[0].consultation_id, item[1].timetoken)

    endings = await asyncio.gather(*(over(item) for item in check_ins))
    waiting = []
    for (message, envelope), ending in zip(check_ins, endings, strict=True):
        if ending is not None:
            log.info("waiting room replay dropped consultation=%s reason=%s", message.consultation_id, ending)
        else:
            waiting.append((message, envelope))
    return waiting


async def ended_since(bus: Bus, provider_id: str, consultation_id: str, timetoken: int) -> str | None:
    """``ended`` or ``cancelled`` when the consultation channel says so after ``timetoken``."""
    try:
        stored = await bus.history(consultation_id, since=timetoken, limit=WAITING_ROOM_HISTORY)
    except Exception as exc:  # unknown: follow it, its catch-up decides
        log.warning(
            "waiting room replay could not read consultation=%s error=%s",
            consultation_id,
            describe_exception(exc),
        )
        return None
    patient = ConsultationChannels.parse(consultation_id).patient_id
    for envelope in stored:
        decoded = decode(envelope.channel, envelope.message, envelope.publisher)
        if isinstance(decoded, ConsultationEnded) and envelope.publisher == provider_id:
            return "ended"
        if isinstance(decoded, ConsultationCancelled) and envelope.publisher in (provider_id, patient):
            return "cancelled"
    return None
