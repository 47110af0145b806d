"""Check 8: this machine's clock against the clinic backend's (its HTTP ``Date`` header).

Access Manager tokens, TURN credentials and the audit trail's timestamps all depend on it. The
``Date`` header has whole seconds, so the clinic's time is taken as the middle of its second and
compared with the middle of the request's round trip.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from email.utils import parsedate_to_datetime

import aiohttp
from yarl import URL

from telehealth_client.config import Settings
from telehealth_client.doctor.report import Result, failed, passed, skipped, warned
from telehealth_client.outbound import Outbound

NAME = "clock"
FAIL_SECONDS = 60.0  # tokens and TURN credentials are refused or expire early beyond this
WARN_SECONDS = 5.0
FIX = "set the time: timedatectl set-ntp true (and let the NTP service reach its server)"


def judge_skew(date: str | None, sent: float, received: float) -> Result:
    """The clinic's ``Date`` header against this clock, read between ``sent`` and ``received``
    (seconds since the epoch). Pure."""
    if date is None:
        return skipped(NAME, "not compared: the clinic backend's answer has no Date header")
    try:
        theirs = parsedate_to_datetime(date).timestamp() + 0.5
    except (TypeError, ValueError):
        return skipped(NAME, "not compared: the clinic backend's Date header cannot be read")
    skew = (sent + received) / 2 - theirs
    size = abs(skew)
    way = "ahead of" if skew > 0 else "behind"
    said = f"this clock is {size:.0f} s {way} the clinic backend's"
    if size > FAIL_SECONDS:
        return failed(NAME, f"{said} (more than {FAIL_SECONDS:.0f} s): {FIX}")
    if size > WARN_SECONDS:
        return warned(NAME, f"{said} (more than {WARN_SECONDS:.0f} s): {FIX}")
    return passed(NAME, f"within {WARN_SECONDS:.0f} s of the clinic backend's ({size:.1f} s)")


async def check_clock(settings: Settings, now: Callable[[], float] = time.time) -> Result:
    """Check 8: any answer of the clinic backend carries its Date; no credential is sent."""
    timeout = aiohttp.ClientTimeout(total=settings.request_timeout_seconds)
    outbound = Outbound.from_settings(settings)  # the agent's route: its proxy and CA bundle
    url = URL(settings.clinic_url)
    proxy = outbound.proxy_for(url.host or "", tls=url.scheme == "https")
    try:
        await outbound.prepare()
        async with aiohttp.ClientSession(timeout=timeout) as session:
            sent = now()
            async with session.get(
                f"{settings.clinic_url}/",
                allow_redirects=False,
                ssl=outbound.verify,
                proxy=proxy.url if proxy is not None else None,
                proxy_headers=proxy.headers if proxy is not None else None,
            ) as response:
                received = now()
                date = response.headers.get("Date")
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        return skipped(NAME, f"not compared: the clinic backend did not answer ({type(exc).__name__})")
    return judge_skew(date, sent, received)
