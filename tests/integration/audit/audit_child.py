"""A process that records audit events, for the SIGKILL test: run with the venv's python.

``audit_child.py STATE_DIR RUN``: opens the trail (its sink: the clinic at
``TELEHEALTH_CLINIC_URL`` with ``TELEHEALTH_DEVICE_CREDENTIAL``; its chain that device's, keyed
with the same credential, as ``TELEHEALTH_USER_ID``), prints ``open``, then for
each line read on stdin records one event and prints ``recorded POSITION ID`` once record()
has returned. At the end of stdin it waits until everything is delivered to the sink, prints
``drained`` (or ``not drained``) and exits.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from telehealth_client.audit.trail import AuditTrail, ChainKeys, audit_event
from telehealth_client.security.clinic_client import ClinicClient


async def main(state_dir: Path, run: int) -> int:
    organization = os.environ["TELEHEALTH_ORGANIZATION_ID"]
    clinic = ClinicClient(
        os.environ["TELEHEALTH_CLINIC_URL"], os.environ["TELEHEALTH_DEVICE_CREDENTIAL"], timeout_seconds=5.0
    )
    trail = AuditTrail(
        state_dir,
        keys=ChainKeys(os.environ["TELEHEALTH_DEVICE_CREDENTIAL"]),
        device_id=os.environ["TELEHEALTH_USER_ID"],
        organization_id=organization,
        sink=clinic,
        backoff_min_seconds=0.02,
        backoff_max_seconds=0.2,
    )
    await trail.open()
    print("open", flush=True)
    loop = asyncio.get_running_loop()
    stdin = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)
    number = 0
    while await stdin.readline():
        event = audit_event(
            "DEVICE_CHECK_COMPLETED",
            organization_id=organization,
            actor_id="kiosk-1",
            actor_role="patient",
            resource_type="device",
            resource_id="kiosk-1",
            action="check",
            metadata={"run": run, "sequence": number},
        )
        position = await trail.record(event)
        print(f"recorded {position} {event.id}", flush=True)
        number += 1
    drained = await trail.wait_delivered(20.0)
    await trail.aclose()
    await clinic.aclose()
    print("drained" if drained else "not drained", flush=True)
    return 0 if drained else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main(Path(sys.argv[1]), int(sys.argv[2]))))
