"""A read of PHI through the API is recorded in the audit trail first, or it is not served.

``audit_or_503`` runs one record with the agent's own auditor (its user as actor): if the trail
cannot record it, the read is refused 503 ``audit-unavailable`` (retry once the trail is back),
logged by the exception's type and place only. The chat list, the previews and the camera
snapshot all go through it.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, cast

from telehealth_client.api.errors import ApiError
from telehealth_client.logs import describe_exception
from telehealth_client.protocol.messages import SenderRole

if TYPE_CHECKING:
    from telehealth_client.api.routing import Call
    from telehealth_client.audit.auditor import Auditor

log = logging.getLogger(__name__)


async def audit_or_503(call: Call, what: str, record: Callable[[Auditor], Awaitable[object]]) -> None:
    """Record the read of ``what`` (``chat list``, ``preview``, ``snapshot``) with ``record``, or
    refuse it: ApiError 503 when the trail is not open or cannot record it."""
    agent = call.agent
    try:
        if agent.durable is None:
            raise RuntimeError("the audit trail is not open")
        auditor = agent.durable.auditor(agent.settings.user_id, cast(SenderRole, str(agent.settings.role)))
        await record(auditor)
    except Exception as exc:
        log.error("%s refused: not audited error=%s", what, describe_exception(exc))
        raise ApiError(
            503, "audit-unavailable", f"the audit trail could not record the read: the {what} is not served"
        ) from None
