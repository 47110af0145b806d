"""The provider console's server: ``telehealth-agent devstack`` prints its URL, which serves the page
and the PubNub JavaScript SDK's browser build from the local install (nothing from elsewhere); its
development backend signs in only the stack's providers, forwards only the clinic calls a provider
app makes, and answers only this machine's own page, naming the field and the reason otherwise."""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import pytest

from telehealth_devstack.console.sessions import HEADER
from telehealth_devstack.stack import DevStack
from tests.support.api import PROVIDER, SPECIALIST
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


async def _signed_in(session: aiohttp.ClientSession, base: str, provider: str) -> dict[str, str]:
    """Signs ``provider`` in: the session header its page sends on every later backend call."""
    status, answer = await _post(session, f"{base}/dev/sign-in", {"userId": provider})
    assert status == 200 and answer["userId"] == provider, answer
    return {HEADER: answer["session"]}


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
        signed_in = {HEADER: answer["session"]}
        refusals = [
            (f"{base}/dev/sign-in", {"userId": "dr-nobody"}, {}, 422, "userId"),
            (f"{base}/dev/sign-in", {"userId": "kiosk-api"}, {}, 422, "userId"),
            (f"{base}/dev/sign-in", [PROVIDER], {}, 422, "body"),
            (f"{base}/dev/clinic/publish", {"body": {}}, signed_in, 404, "call"),
            (f"{base}/dev/clinic/on-call", {"body": {"departmentId": "a.b"}}, signed_in, 422, "departmentId"),
            (f"{base}/dev/clinic/token", {"body": []}, signed_in, 422, "body"),
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
            {"body": {"userId": "dr-x", "consultationChannel": "consultation.dr-x.pt-1"}},
            **signed_in,
        )
        assert (status, answer["field"]) == (403, "consultationChannel"), answer


async def test_every_clinic_call_acts_as_the_session_s_provider_and_none_goes_without_a_session(
    console_stack: DevStack,
) -> None:
    base = console_stack.console_url
    theirs = f"consultation.{SPECIALIST}.pat-other"
    # What a page signed in as PROVIDER would ask as SPECIALIST: each names SPECIALIST (the body's
    # "userId" too, which the backend once took as the provider).
    as_the_other = [
        ("token", {"userId": SPECIALIST, "role": "provider", "departmentId": "er"}, "userId"),
        ("turn-credentials", {"userId": SPECIALIST}, "userId"),
        ("invite", {"consultationChannel": theirs, "invitedProviderId": PROVIDER, "role": "observer"},
         "consultationChannel"),
        ("revoke-access", {"consultationChannel": theirs, "userId": "pat-other"}, "consultationChannel"),
    ]  # fmt: skip
    async with aiohttp.ClientSession() as session:
        signed_in = await _signed_in(session, base, PROVIDER)
        for call, body, field in as_the_other:
            status, answer = await _post(
                session, f"{base}/dev/clinic/{call}", {"userId": SPECIALIST, "body": body}, **signed_in
            )
            assert (status, answer["field"]) == (403, field), (call, answer)
        # Its own calls go through.
        status, answer = await _post(
            session, f"{base}/dev/clinic/turn-credentials", {"body": {"userId": PROVIDER}}, **signed_in
        )
        assert status == 200 and answer["username"], answer
        # No session, or one this console never issued: refused before the clinic is asked.
        for headers in ({}, {HEADER: "not-a-session"}):
            status, answer = await _post(
                session, f"{base}/dev/clinic/turn-credentials", {"body": {"userId": PROVIDER}}, **headers
            )
            assert (status, answer["field"]) == (401, HEADER), (headers, answer)
            assert answer["reason"], answer


async def test_the_console_answers_every_refusal_in_json_naming_the_field(console_stack: DevStack) -> None:
    base = console_stack.console_url
    nested = "[" * 5000 + "]" * 5000
    async with aiohttp.ClientSession() as session:
        status, answer = await _post(session, f"{base}/dev/sign-in", '{"userId": ' + nested + "}",
                                     **{"Content-Type": "application/json"})  # fmt: skip
        assert (status, answer["field"]) == (422, "body"), answer
        assert "nest" in answer["reason"], answer
        signed_in = await _signed_in(session, base, PROVIDER)
        status, answer = await _post(session, f"{base}/dev/clinic/unknown", {"body": {}}, **signed_in)
        assert (status, answer["field"]) == (404, "call"), answer
        async with session.get(f"{base}/no-such-page") as missing:
            assert (missing.status, (await missing.json())["field"]) == (404, "path")
        async with session.put(f"{base}/dev/sign-in", json={}) as wrong:
            assert (wrong.status, (await wrong.json())["field"]) == (405, "method")
