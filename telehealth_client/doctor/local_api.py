"""Check 7: the local API answers where the settings say (``api_socket``, else ``api_host`` and
``api_port``): ``GET /v1/health`` (is the agent healthy), then ``GET /v1/status`` with the token
(is the token the running agent's, and is it the agent of these settings)."""

from __future__ import annotations

from typing import Any

import aiohttp

from telehealth_client.config import Settings
from telehealth_client.doctor.report import Result, failed, passed, warned

NAME = "local-api"
SECONDS = 10.0
RESTART = "systemctl restart kiosk.service"


def address_of(settings: Settings) -> tuple[str, str, aiohttp.BaseConnector]:
    """How to show the API's address, its base URL, and the connector that reaches it."""
    if settings.api_socket is not None:
        return (
            f"unix:{settings.api_socket}",
            "http://localhost",
            aiohttp.UnixConnector(str(settings.api_socket)),
        )
    host = f"[{settings.api_host}]" if ":" in settings.api_host else settings.api_host
    url = f"http://{host}:{settings.api_port}"
    return url, url, aiohttp.TCPConnector()


async def check_local_api(settings: Settings) -> Result:
    if not settings.api_enabled:
        return warned(
            NAME, "the local API is off (api_enabled = false): the kiosk's app cannot drive the agent"
        )
    if settings.api_socket is None and settings.api_port == 0:
        return warned(
            NAME,
            "api_port = 0: the agent picks a free port at start, which the doctor cannot know; set api_port",
        )
    token = settings.require_secret("api_token").get_secret_value()
    address, base, connector = address_of(settings)
    headers = {"Authorization": f"Bearer {token}"}
    timeout = aiohttp.ClientTimeout(total=SECONDS)
    try:
        async with aiohttp.ClientSession(connector=connector, headers=headers, timeout=timeout) as session:
            health_status, health = await _get(session, f"{base}/v1/health")
            status_code, status = await _get(session, f"{base}/v1/status")
    except (aiohttp.ClientError, TimeoutError) as exc:
        return failed(
            NAME,
            f"nothing answers at {address} ({type(exc).__name__}): is the agent running? "
            "systemctl status kiosk.service (journalctl -u kiosk.service says why not)",
        )
    if health_status not in (200, 503) or "pubsub" not in health:
        return failed(
            NAME,
            f"{address} answers, but not as the agent does (HTTP {health_status}): is it another program's?",
        )
    if status_code == 401:
        where = settings.source_of("api_token")
        return failed(
            NAME,
            f"the agent refused the api_token (from {where}): it was started with another one; "
            f"restart it to take this one: {RESTART}",
        )
    if status_code != 200:
        return failed(NAME, f"{address}/v1/status answered HTTP {status_code}")
    if status.get("userId") != settings.user_id:
        return failed(
            NAME,
            f"the agent at {address} runs as {status.get('userId')}, not {settings.user_id}: it was started "
            f"with other settings; restart it: {RESTART}",
        )
    if health_status == 503:
        return failed(NAME, f"{address}: the agent answers but is not healthy: {health.get('reason')}")
    return passed(
        NAME,
        f"{address}: the agent answers as {status.get('role')} {settings.user_id} "
        f"(pub/sub {health['pubsub']})",
    )


async def _get(session: aiohttp.ClientSession, url: str) -> tuple[int, dict[str, Any]]:
    """The status and the JSON object of the answer ({} for anything else)."""
    async with session.get(url) as response:
        try:
            body = await response.json(content_type=None)
        except ValueError:
            body = None
        return response.status, body if isinstance(body, dict) else {}
