"""STUN retransmission pacing for the media child: the one place that reaches into aioice.

Measured here: in a relay-only call the callee's first connectivity check reaches the caller's
TURN allocation before the caller has the answer and a permission for the callee, so coturn drops
it; with aioice's 500 ms first retransmission the call then waits half a second (offer to first
frame 0.56-0.59 s, of which 0.48 s is that wait). A 100 ms first retransmission brings the call up
in about 0.1 s. The number of retransmissions grows so that a transaction still gives up after
about 25 s (aioice: 0.5 s x 63 = 31.5 s), not after 6 s.

aioice has no API for this: its module constants are set, pinned to the aioice versions this was
measured with; any other version leaves aioice as it is and says so once.

Public API: ``tune_stun_retransmission() -> bool`` (True when applied); ``FIRST_RETRANSMISSION``,
``RETRANSMISSIONS``, ``PINNED_VERSIONS``.
"""

from __future__ import annotations

import logging
from typing import Final

log = logging.getLogger(__name__)

PINNED_VERSIONS: Final = ("0.13.",)  # version prefixes (pyproject allows aioice <0.14)
FIRST_RETRANSMISSION: Final = 0.1  # seconds; doubling after each
RETRANSMISSIONS: Final = 8  # 0.1 s x (2**8 - 1) = 25.5 s before a transaction gives up


def tune_stun_retransmission() -> bool:
    import aioice
    import aioice.stun

    version = getattr(aioice, "__version__", "unknown")
    if not version.startswith(PINNED_VERSIONS) or not hasattr(aioice.stun, "RETRY_RTO"):
        log.warning("stun retransmission left as it is aioice=%s (pinned to %s)", version, PINNED_VERSIONS)
        return False
    aioice.stun.RETRY_RTO = FIRST_RETRANSMISSION
    aioice.stun.RETRY_MAX = RETRANSMISSIONS
    return True
