"""The graceful stop's budgets: how long the stop may wait on the network, in all and per step.

systemd SIGKILLs the service ``TimeoutStopSec`` (kiosk.service: 20 s) after its SIGTERM; issue 24
asks for a stop under 2 s even with a full outbox. So the whole stop shares ONE deadline,
``STOP_SECONDS`` from its start (``stop_clock()``, opened by ``Agent.aclose``): each step waits
for at most its own budget and never past that deadline (``budget(step)``). With a healthy network
each step ends as soon as its work is done; a flush whose every attempt fails gives up at once
(``Outbox.flush``, ``AuditTrail.flush``) rather than wait out its budget; with the network gone
the steps together stop at the deadline. What was not sent stays on disk for the next start (the
outbox, the audit trail, the consultation's state file). In order (``Agent.aclose``):

1. the local API closes (nothing drives the parts while they stop);
2. a call under way ends: ``end-call`` to the peer first (``END_CALL_SECONDS``), then its media
   children close (their own bound: ``media.worker.CLOSE_TIMEOUT_SECONDS``; local work);
3. the chat outbox, then the audit trail's channel, flush on the consultation's bus
   (``FLUSH_SECONDS`` for both together);
4. the consultation's channels are left: a presence leave (``LEAVE_SECONDS``; else the peer sees the
   patient go only at the presence timeout); the state file stays, so a start resumes it;
5. side by side: the audit sink gets what it has not acknowledged yet (``SINK_SECONDS``; it has
   been delivering all along) and the agent's notification channel is left (``LEAVE_SECONDS``);
   then the stores close.

Worst case with the network gone: ``WORST_CASE_SECONDS`` of waiting on the network, plus the
stop's local work (the media children's close, the stores', the interpreter's exit).

The deadline is a context variable: it reaches the steps run by the task that opened it and by the
tasks started from it during the stop (a consultation's close), and no other agent in the process.
``stopping()`` says whether one runs: the chat outbox gives up at its failures only in a stop (a
consultation that ends while the agent runs gives its flush the whole ``FLUSH_SECONDS``).
"""

from __future__ import annotations

import contextlib
import contextvars
import time
from collections.abc import Iterator
from typing import Final

# The whole stop's waits on the network, together: under issue 24's 2 s with the local work.
STOP_SECONDS: Final = 1.5
# The peer's call ends at once with our end-call; without it, its stall timers end it seconds later.
END_CALL_SECONDS: Final = 1.0
# The chat outbox, then the audit channel, on one deadline: a healthy network drains them in a
# round trip or two; what is left is sent (once) after the next start.
FLUSH_SECONDS: Final = 1.5
# A presence leave: a courtesy to the peer (the presence timeout tells it anyway).
LEAVE_SECONDS: Final = 1.0
# The audit sink's last deliveries (the clinic backend).
SINK_SECONDS: Final = 1.5

WORST_CASE_SECONDS: Final = STOP_SECONDS

# When the stop under way must be over (time.monotonic()); None outside a stop.
_deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar("stop_deadline", default=None)


@contextlib.contextmanager
def stop_clock(within: float = STOP_SECONDS) -> Iterator[None]:
    """The stop's one deadline, ``within`` s from now, for the steps run inside (and the tasks they
    start). A clock already running (a part closed within a stop) is kept: it is the earlier."""
    if _deadline.get() is not None:
        yield
        return
    token = _deadline.set(time.monotonic() + within)
    try:
        yield
    finally:
        _deadline.reset(token)


def stopping() -> bool:
    """Whether a stop's deadline runs here (a consultation's close is a stop's, or its own end)."""
    return _deadline.get() is not None


def budget(step: float) -> float:
    """``step`` seconds, or what is left of the stop's deadline when that is less (never below 0)."""
    deadline = _deadline.get()
    if deadline is None:
        return step
    return max(0.0, min(step, deadline - time.monotonic()))
