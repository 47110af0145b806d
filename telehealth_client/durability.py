"""What must survive a network loss and a restart, opened once per agent: the outbox and the audit trail.

``Durable`` holds the agent's one encrypted ``Outbox`` (chat, read receipts, emergencies), the
``DeliveryRouter`` that tells each sender how its items fared, and the ``AuditTrail``. Endpoints
attach their bus to both while they have one (``attach`` / ``detach``): a kiosk has a bus only
during a consultation, a provider's cart for its whole run. What could not be sent waits on disk
for the next bus.

Public API: ``await Durable.open(state_dir, secret=..., previous_secrets=(), organization_id=...,
device_id=..., audit_keys=..., sink=None)``; ``state_dir``, ``outbox``, ``router``, ``trail``,
``sealer``, ``organization_id``; ``auditor(actor_id, role)``; ``attach(bus, denials=None)``;
``await detach(within=FLUSH_SECONDS)``; ``await aclose(sink_within=SINK_SECONDS)`` (the stop's
flush, each step within its budget and the stop's deadline: ``stop_budgets``; a flush whose every
attempt fails gives up at once).
Files: ``state_dir/outbox.sqlite3`` (sealed with a key derived from ``secret``, the agent's cipher
key), ``state_dir/audit/`` (the device's trail, keyed with ``audit_keys``, from its device
credential; a version 2 trail left by an earlier agent is delivered under ``secret``) and
``state_dir/audit-acknowledged.json``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from telehealth_client.audit.auditor import Auditor
from telehealth_client.audit.trail import AuditSink, AuditTrail, ChainKeys, LegacyChainKeys
from telehealth_client.durable.at_rest import Sealer
from telehealth_client.durable.deliveries import DeliveryRouter
from telehealth_client.durable.outbox import Outbox
from telehealth_client.protocol.channels import validate_id
from telehealth_client.protocol.messages import SenderRole
from telehealth_client.pubsub.bus import AccessDeniedError, Bus
from telehealth_client.stop_budgets import FLUSH_SECONDS, SINK_SECONDS, budget, stopping

log = logging.getLogger(__name__)

OUTBOX_FILE: Final = "outbox.sqlite3"
OUTBOX_PURPOSE: Final = "outbox v1"
STATE_PURPOSE: Final = "state v1"

DenialHandler = Callable[[AccessDeniedError], Awaitable[bool]]


@dataclass(eq=False, repr=False)  # one per agent: compared by identity, and nothing of it printed
class Durable:
    state_dir: Path
    outbox: Outbox
    router: DeliveryRouter
    trail: AuditTrail
    # For other sealed state (open escalations): same secret, its own derived key.
    sealer: Sealer
    organization_id: str

    @classmethod
    async def open(
        cls,
        state_dir: Path,
        *,
        secret: str,
        previous_secrets: Sequence[str] = (),
        organization_id: str,
        device_id: str,
        audit_keys: ChainKeys,
        sink: AuditSink | None = None,
        outbox_backoff: tuple[float, float] = (0.2, 5.0),
    ) -> Durable:
        organization_id = validate_id(organization_id, "organizationId")
        state_dir = Path(state_dir)
        state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        router = DeliveryRouter()
        outbox = Outbox(
            state_dir / OUTBOX_FILE,
            Sealer(secret, previous_secrets, purpose=OUTBOX_PURPOSE),
            on_sent=router.sent,
            on_failed=router.failed,
            backoff_min_seconds=outbox_backoff[0],
            backoff_max_seconds=outbox_backoff[1],
        )
        trail = AuditTrail(
            state_dir,
            keys=audit_keys,
            device_id=device_id,
            organization_id=organization_id,
            sink=sink,
            legacy_keys=LegacyChainKeys(secret, previous_secrets),
        )
        await outbox.open()
        try:
            await trail.open()
        except BaseException:
            await outbox.aclose()
            raise
        sealer = Sealer(secret, previous_secrets, purpose=STATE_PURPOSE)
        return cls(state_dir, outbox, router, trail, sealer, organization_id)

    def auditor(self, actor_id: str, role: SenderRole) -> Auditor:
        return Auditor(self.trail, organization_id=self.organization_id, actor_id=actor_id, actor_role=role)

    def attach(self, bus: Bus, *, denials: DenialHandler | None = None) -> None:
        """Send what waits (and what comes) on ``bus``."""
        self.outbox.attach(bus, denials=denials)
        self.trail.attach_bus(bus)

    async def detach(self, within: float = FLUSH_SECONDS) -> None:
        """Give what waits ``within`` seconds in all (never past a stop's deadline) to go out on
        the current bus (the outbox, then what the audit channel still lacks: it has been
        publishing meanwhile), then stop using it; each gives up at once when its every attempt
        fails (the outbox only in a stop: a consultation's end gives it the whole time, as a kiosk
        has no other bus until the next consultation). A publish still in flight then is
        cancelled and checked against history after the next attach. Returns at once when nothing
        waits, or nothing is attached."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + budget(within)
        await self.outbox.flush(max(0.0, deadline - loop.time()), give_up_on_failure=stopping())
        await self.outbox.detach(max(0.0, deadline - loop.time()))
        await self.trail.detach_bus(max(0.0, deadline - loop.time()))

    async def aclose(self, *, sink_within: float = SINK_SECONDS) -> None:
        """Flush and close: what waits gets ``FLUSH_SECONDS`` on a bus still attached (a nurse's
        cart's), the audit sink ``sink_within`` more for what it has not acknowledged (both never
        past a stop's deadline, and ended by a failed attempt); what is left stays on disk for
        the next start."""
        await self.detach()
        within = budget(sink_within)
        if self.trail.has_sink and not await self.trail.flush("sink", within):
            status = self.trail.status()
            log.warning(
                "audit sink not flushed: left for the next start awaiting_sink=%d within=%.1f",
                status.awaiting_sink,
                within,
            )
        await self.outbox.aclose()
        await self.trail.aclose()
