"""The provider console's server: ``telehealth-agent devstack`` prints its URL, which serves the page
and the PubNub JavaScript SDK's browser build from the local install (nothing from elsewhere); its
development backend signs in only the stack's providers, forwards only the clinic calls a provider
app makes, and answers only this machine's own page, naming the field and the reason otherwise."""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import pytest

from telehealth_devstack.stack import DevStack
from tests.support.api import PROVIDER
from tests.support.devstack_cli import Devstack, running

pytestmark = pytest.mark.integration

CONSOLE_LINE = "# provider console (open in a browser on this machine): "


async def test_devstack_prints_the_console_url_which_serves_the_page_and_the_sdk(
    started: list[Devstack],
) -> None:
    process = await running(started)
    (line,) = [line for line in process.lines if line.startswith(CONSOLE_LINE)]
    url = line.removeprefix(CONSOLE_LINE).strip()
    assert url.startswith("http://127.0.0.1:") and url.endswith("/"), url
    relay = process.kiosk_settings()["TELEHEALTH_ORIGIN"]
    async with aiohttp.ClientSession() as session:
        async with session.get(url) as page:
            assert page.status == 200 and page.content_type == "text/html"
            html = await page.text()
            policy = page.headers["Content-Security-Policy"]
        for script in ("/pubnub.js", "/call.js", "/console.js"):
            assert f'<script src="{script}">' in html
        assert "://" not in html  # no CDN: every file comes from this server
        assert "default-src 'none'" in policy and f"connect-src 'self' http://{relay}" in policy
        async with session.get(url + "pubnub.js") as sdk:
            assert sdk.status == 200 and sdk.content_type == "text/javascript"
            assert "12.0.3" in await sdk.text()  # the pinned SDK, from devstack's own npm install
        async with session.get(url + "dev/providers") as providers:
            assert await providers.json() == {"providers": [{"userId": "dr-demo", "departmentId": "er"}]}
    await process.stop()


async def _post(session: aiohttp.ClientSession, url: str, body: Any, **headers: str) -> tuple[int, Any]:
    data = body if isinstance(body, str) else None
    async with session.post(url, json=None if data else body, data=data, headers=headers) as answer:
        return answer.status, await answer.json()


async def test_the_backend_refuses_what_a_provider_page_would_not_ask_naming_the_field(
    console_stack: DevStack,
) -> None:
    base = console_stack.console_url
    foreign = "http://127.0.0.1:9"
    async with aiohttp.ClientSession() as session:
        status, answer = await _post(session, f"{base}/dev/sign-in", {"userId": PROVIDER})
        assert status == 200 and answer["userId"] == PROVIDER and answer["token"], status
        assert answer["iceServers"][0]["urls"], answer["iceServers"]
        # The page gets a token, never the provider's device credential.
        assert console_stack.users[PROVIDER].credential not in json.dumps(answer)
        refusals = [
            (f"{base}/dev/sign-in", {"userId": "dr-nobody"}, {}, 422, "userId"),
            (f"{base}/dev/sign-in", {"userId": "kiosk-api"}, {}, 422, "userId"),
            (f"{base}/dev/sign-in", [PROVIDER], {}, 422, "body"),
            (f"{base}/dev/clinic/publish", {"userId": PROVIDER, "body": {}}, {}, 422, "call"),
            (f"{base}/dev/clinic/on-call", {"userId": PROVIDER, "body": {"departmentId": "a.b"}}, {}, 422,
             "departmentId"),
            (f"{base}/dev/clinic/token", {"userId": PROVIDER, "body": []}, {}, 422, "body"),
            (f"{base}/dev/sign-in", {"userId": PROVIDER}, {"Origin": foreign}, 403, "Origin"),
            (f"{base}/dev/sign-in", {"userId": PROVIDER}, {"Host": "attacker.example"}, 421, "Host"),
            (f"{base}/dev/sign-in", "userId=dr-api", {"Content-Type": "text/plain"}, 415, "Content-Type"),
        ]  # fmt: skip
        for url, body, headers, expected, field in refusals:
            status, answer = await _post(session, url, body, **headers)
            assert (status, answer["field"]) == (expected, field), (url, body, headers, answer)
            assert answer["reason"], answer
        # What the clinic refuses comes back as the clinic said it: a provider revokes only on its own
        # consultations.
        status, answer = await _post(
            session,
            f"{base}/dev/clinic/revoke-access",
            {"userId": PROVIDER, "body": {"userId": "dr-x", "consultationChannel": "consultation.dr-x.pt-1"}},
        )
        assert (status, answer["field"]) == (403, "consultationChannel"), answer
