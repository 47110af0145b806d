"""Check 4: the clinic backend answers this device's credential.

The cheapest authenticated call there is: the audit sink's head for this device
(``GET /api/audit-events/head``, PROTOCOL.md), which only the device's own credential may read,
so it proves both that the clinic knows the credential and that it is ``user_id``'s.
"""

from __future__ import annotations

from telehealth_client.config import Settings
from telehealth_client.doctor.report import Result, failed, passed
from telehealth_client.outbound import Outbound
from telehealth_client.security.clinic_client import ClinicClient, ClinicError

NAME = "clinic"


def credential_source(settings: Settings) -> str:
    """Where the device credential came from, as a place to put the right one."""
    origin = settings.source_of("device_credential")
    for prefix in ("systemd credential ", "file "):
        if origin.startswith(prefix):
            return origin.removeprefix(prefix).split(" (", 1)[0]
    return origin.removeprefix("environment ")


async def check_clinic(settings: Settings) -> Result:
    """Check 4 (the credential is there: the credentials check passed before this runs)."""
    credential = settings.require_secret("device_credential").get_secret_value()
    # No waiting out a rate limit here: the doctor reports it.
    outbound = Outbound.from_settings(settings)  # the agent's route: its proxy and CA bundle
    await outbound.prepare()
    clinic = ClinicClient(
        settings.clinic_url,
        credential,
        timeout_seconds=settings.request_timeout_seconds,
        retry_after_wait_seconds=0,
        outbound=outbound,
    )
    try:
        await clinic.audit_head(settings.user_id)
    except ClinicError as exc:
        return failed(NAME, refusal(settings, exc))
    finally:
        await clinic.aclose()
    return passed(NAME, f"{settings.clinic_url} accepted this device's credential as {settings.user_id}")


def refusal(settings: Settings, exc: ClinicError) -> str:
    """What the clinic's answer means, and the fix."""
    url, where = settings.clinic_url, credential_source(settings)
    if exc.status == 401:
        return (
            f"the clinic refused the device credential (HTTP 401): put the credential the clinic "
            f"issued for {settings.user_id} in {where}"
        )
    if exc.status == 403:
        return (
            f"the clinic refused the device credential for user_id {settings.user_id} (HTTP 403, "
            f"{exc.reason}): the credential in {where} and user_id must be the same device's"
        )
    if exc.status is None:
        return f"the clinic backend at {url} did not answer ({exc.reason}): check clinic_url and the network"
    if exc.status >= 500:
        return f"the clinic backend at {url} failed (HTTP {exc.status}): the clinic's side must look at it"
    return f"the clinic backend at {url} answered HTTP {exc.status} ({exc.reason}): check clinic_url"
