"""The graceful stop's budgets: how long each step of a stop may wait on the network.

systemd SIGKILLs the service ``TimeoutStopSec`` (kiosk.service: 20 s) after its SIGTERM. With a
healthy network each step ends as soon as its work is done (the whole stop well under 2 s); with
the network gone each gives up at its own budget, so no step waits on an unreachable peer for
longer, and what was not sent stays on disk for the next start (the outbox, the audit trail, the
consultation's state file). In order (``Agent.aclose``):

1. the local API closes (nothing drives the parts while they stop);
2. a call under way ends: ``end-call`` to the peer (``END_CALL_SECONDS``), then its media children
   close (their own bound: ``media.worker.CLOSE_TIMEOUT_SECONDS``);
3. the chat outbox and the audit trail's channel drain on the consultation's bus (``FLUSH_SECONDS``
   for both together);
4. the consultation's channels are left: a presence leave (``LEAVE_SECONDS``; else the peer sees the
   patient go only at the presence timeout); the state file stays, so a start resumes it;
5. the audit sink gets what it has not acknowledged yet (``SINK_SECONDS``; it has been delivering
   all along), then the stores close.

Worst case with the network gone: about ``WORST_CASE_SECONDS`` plus the media children's close.
"""

from __future__ import annotations

from typing import Final

# The peer's call ends at once with our end-call; without it, its stall timers end it seconds later.
END_CALL_SECONDS: Final = 1.0
# The chat outbox, then the audit channel, on one deadline: a healthy network drains them in a
# round trip or two; what is left is sent (once) after the next start.
FLUSH_SECONDS: Final = 1.5
# The presence leave: a courtesy to the peer (the presence timeout tells it anyway).
LEAVE_SECONDS: Final = 1.0
# The audit sink's last deliveries (the clinic backend), after everything above.
SINK_SECONDS: Final = 1.5

WORST_CASE_SECONDS: Final = END_CALL_SECONDS + FLUSH_SECONDS + LEAVE_SECONDS + SINK_SECONDS
