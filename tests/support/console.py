"""The provider console (served by the development stack at ``console_url``) in headless Chromium
with a fake camera and microphone, for tests/integration/console. The page is driven through its
``data-testid`` locators by the page driver of the technician page (``tests/js/technician.mjs``);
every wait is the browser's own wait for a condition, never a sleep."""

from __future__ import annotations

from typing import Any

from telehealth_client.protocol.messages import ConsultationState
from telehealth_devstack.stack import DevStack
from tests.support.api import CHECK_IN, CONSULTATION, PROVIDER, RunningAgent, record_consent
from tests.support.technician_page import TechnicianPage


def by_testid(name: str) -> str:
    return f'[data-testid="{name}"]'


def waiting_row(consultation_id: str) -> str:
    """The waiting room's entry of one consultation."""
    return f'{by_testid("waiting-room")} li[data-consultation-id="{consultation_id}"]'


async def open_console(url: str) -> TechnicianPage:
    """The console's page in a browser with fake media devices (nothing signed in yet)."""
    page = await TechnicianPage.start(url, fake_media=True)
    try:
        await page.do("open")
    except BaseException:
        await page.close()
        raise
    return page


async def sign_in(page: TechnicianPage, provider: str) -> None:
    """Signs in as the development provider ``provider``; back once its waiting room is shown."""
    await page.wait_for(f'{by_testid("provider-select")} option[value="{provider}"]', state="attached")
    await page.do("select", selector=by_testid("provider-select"), value=provider)
    await page.do("click", selector=by_testid("sign-in-button"))
    await page.wait_for(by_testid("identity"), f"Signed in as {provider}")


async def click(page: TechnicianPage, name: str) -> None:
    await page.do("click", selector=by_testid(name))


async def kiosk_consultation(kiosk: RunningAgent) -> dict[str, Any]:
    """The kiosk's one consultation as ``GET /v1/status`` shows it."""
    status, answer = await kiosk.api.get("/v1/status")
    assert status == 200, answer
    (consultation,) = answer["consultations"]
    assert isinstance(consultation, dict)
    return consultation


async def signed_in_with_a_check_in(stack: DevStack, kiosk: RunningAgent, page: TechnicianPage) -> str:
    """The console signed in as the tests' provider, then the kiosk's patient checked in (consent
    recorded first): the waiting room's entry of that consultation (a selector)."""
    await sign_in(page, PROVIDER)
    await record_consent(stack)
    status, answer = await kiosk.api.post("/v1/check-in", CHECK_IN)
    assert status == 201, answer
    return waiting_row(CONSULTATION)


async def joined(stack: DevStack, kiosk: RunningAgent, page: TechnicianPage) -> str:
    """As ``signed_in_with_a_check_in``, then the consultation opened and joined: back once the
    kiosk is connecting. The waiting room's entry of that consultation (a selector)."""
    row = await signed_in_with_a_check_in(stack, kiosk, page)
    await page.do("click", selector=f"{row} {by_testid('open')}")
    await click(page, "join")
    await kiosk.wait_state(ConsultationState.CONNECTING)
    return row
