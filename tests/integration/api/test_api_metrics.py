"""``GET /metrics`` on real agents: Prometheus text that ``prometheus_client``'s parser reads, with
the token like every route, one registry per agent (a kiosk and a cart in one process keep their
numbers apart), and a counter that moves once the event it counts was told."""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from devices import synthetic
from telehealth_client import events
from tests.support.api import KIOSK, PROVIDER, Agents, RunningAgent
from tests.support.devices import VIDEO_FRAMES, VIDEO_SIZE

pytestmark = pytest.mark.integration

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


async def scrape(agent: RunningAgent) -> Samples:
    async with agent.api.session.get(f"{agent.api.base}/metrics", headers=agent.api.headers()) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain; version=")
        text = await response.text()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def test_metrics_parse_count_per_agent_and_need_the_token(agents: Agents, tmp_path: Path) -> None:
    width, height = VIDEO_SIZE
    video = synthetic.write_video(tmp_path / "normal.mkv", "normal", VIDEO_FRAMES, width, height)
    kiosk = await agents.start(KIOSK, TELEHEALTH_CAMERA=str(video))
    provider = await agents.start(PROVIDER)

    assert (await kiosk.api.get("/metrics", token=None))[0] == 401
    before = await scrape(kiosk)
    assert before[("telehealth_outbox_pending", ())] == 0
    assert {("target", "sink")} <= {
        labels[0] for name, labels in before if name == "telehealth_audit_backlog"
    }
    assert value(before, "telehealth_calls", status="live") == 0
    assert value(before, "telehealth_device_checks_total", check="devices", status="ok") == 0

    status, answer = await kiosk.api.post("/v1/device-checks", {"skip": ["microphone", "speaker"]})
    assert status == 202
    check_id = answer["check"]["id"]
    await kiosk.wait_event(
        lambda e: isinstance(e, events.DeviceCheckFinished) and e.check_id == check_id, within=60.0
    )
    after = await scrape(kiosk)
    assert value(after, "telehealth_device_checks_total", check="devices", status="ok") == 1
    assert value(after, "telehealth_device_verdict", device="camera", verdict="ok") == 1
    assert value(after, "telehealth_device_verdict", device="microphone", verdict="skipped") == 1

    # The cart's registry is its own: the kiosk's check is not in it.
    cart = await scrape(provider)
    assert value(cart, "telehealth_device_checks_total", check="devices", status="ok") == 0
    assert ("telehealth_device_verdict", (("device", "camera"), ("verdict", "ok"))) not in cart
