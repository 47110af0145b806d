"""The local API's pure parts: the bearer comparison, the event ring's replay arithmetic and IDs, and
the OpenAPI 3.1 document generated from the route table (valid, every route, the token on all but
health)."""

from __future__ import annotations

import json
import time

import pytest
from openapi_spec_validator import validate

from telehealth_client.api import ROUTES
from telehealth_client.api.auth import token_matches
from telehealth_client.api.events_stream import EventRing, event_json
from telehealth_client.api.openapi import openapi_document
from telehealth_client.events import EventHub
from telehealth_client.events.catalogue import Missed, QueueUpdated

TOKEN = b"s3cret-token"


@pytest.mark.parametrize(
    ("header", "matches"),
    [
        ("Bearer s3cret-token", True),
        ("bearer s3cret-token", True),
        ("Bearer  s3cret-token ", True),
        ("Bearer s3cret-tokenx", False),
        ("Bearer s3cret-toke", False),
        ("Bearer ", False),
        ("Basic s3cret-token", False),
        ("s3cret-token", False),
        ("", False),
        (None, False),
        ("Bearer s3cr\u00e9t", False),
    ],
)
def test_the_bearer_token_matches_only_itself(header: str | None, matches: bool) -> None:
    assert token_matches(header, TOKEN) is matches


def queue(position: int) -> QueueUpdated:
    return QueueUpdated("consultation.dr-a.pat-1", position, position * 5)


async def test_the_ring_numbers_events_upward_and_replays_after_an_id() -> None:
    ring = EventRing(EventHub(), capacity=4)
    entries = [ring.append(queue(n)) for n in range(3)]
    assert [e.id for e in entries] == [ring.first_id, ring.first_id + 1, ring.first_id + 2]
    assert ring.last_id == entries[-1].id
    assert ring.since(entries[0].id) == (0, entries[1:])
    assert ring.since(entries[-1].id) == (0, [])
    assert ring.since(ring.first_id - 1) == (0, entries)  # from the start of this run: nothing lost
    assert json.loads(entries[1].data) == {
        "kind": "queue-updated",
        "consultation_id": "consultation.dr-a.pat-1",
        "position": 1,
        "estimated_wait_minutes": 5,
    }
    await ring.aclose()


async def test_the_ring_says_how_many_it_no_longer_holds() -> None:
    ring = EventRing(EventHub(), capacity=3)
    entries = [ring.append(queue(n)) for n in range(5)]  # the first two are gone
    assert ring.oldest_id == entries[2].id
    assert ring.since(entries[0].id) == (1, entries[2:])
    assert ring.since(ring.first_id - 1) == (2, entries[2:])
    assert ring.since(-1) == (2, entries[2:])  # an ID from no run: counted from this run's first
    assert ring.latest("queue-updated") == json.loads(entries[-1].data)
    await ring.aclose()


async def test_the_ring_follows_its_hub_and_records_what_the_hub_dropped() -> None:
    hub = EventHub()
    ring = EventRing(hub, capacity=2)
    ring.start()
    before = ring.last_id
    hub.emit(queue(1))
    assert await ring.wait_after(before, 5.0)
    assert ring.latest("queue-updated") is not None
    ring.append(Missed(3))
    assert ring.latest("missed") == {"kind": "missed", "count": 3, "reason": "hub"}
    await ring.aclose()
    assert ring.closed
    assert not await ring.wait_after(ring.last_id, 5.0)  # a closed ring wakes no one later


async def test_a_later_run_starts_its_ids_above_an_earlier_runs() -> None:
    earlier = EventRing(EventHub())
    last = earlier.append(queue(1)).id
    await earlier.aclose()
    while time.time_ns() // 1000 <= last:  # at least a microsecond between two runs of the agent
        pass
    later = EventRing(EventHub())
    assert later.first_id > last
    await later.aclose()


def test_events_are_written_as_their_kind_and_fields() -> None:
    kind, data = event_json(queue(2))
    assert kind == "queue-updated"
    assert json.loads(data)["position"] == 2


def test_the_openapi_document_is_valid_3_1_and_lists_every_route() -> None:
    document = openapi_document(ROUTES)
    validate(document)
    assert document["openapi"] == "3.1.0"
    listed = {(method.upper(), path) for path, item in document["paths"].items() for method in item}
    assert listed == {(route.method, route.path) for route in ROUTES}
    assert len(listed) == len(ROUTES)  # no route twice
    for route in ROUTES:
        operation = document["paths"][route.path][route.method.lower()]
        if route.public:
            assert operation["security"] == [] and "401" not in operation["responses"]
        else:
            assert "security" not in operation and "401" in operation["responses"]  # the document's default
        if route.body is not None:
            ref = operation["requestBody"]["content"]["application/json"]["schema"]["$ref"]
            assert ref.rsplit("/", 1)[1] in document["components"]["schemas"]
            assert {"413", "422"} <= set(operation["responses"])
    assert [route.path for route in ROUTES if route.public] == ["/v1/health"]
    assert document["security"] == [{"bearer": []}]


def test_the_request_schemas_name_the_json_fields_as_the_api_takes_them() -> None:
    schemas = openapi_document(ROUTES)["components"]["schemas"]
    check_in = schemas["CheckInRequest"]
    assert set(check_in["required"]) == {"appointmentId", "patientId", "providerId", "departmentId"}
    assert check_in["additionalProperties"] is False
