import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from telehealth_client.protocol import messages as m
from telehealth_client.protocol.messages import Drop, decode, encode
from tests.support.messages import AUDIT_SAMPLE, CONSULTATION, SAMPLES, UUID_A, VIDEO


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_every_message_decodes_and_encodes_back_to_the_same_wire_dict(name: str) -> None:
    channel, payload, publisher = SAMPLES[name]
    message = decode(channel, payload, publisher)
    assert not isinstance(message, Drop), str(message)
    assert encode(message) == payload


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_unknown_extra_fields_are_ignored(name: str) -> None:
    channel, payload, publisher = SAMPLES[name]
    message = decode(channel, {**payload, "futureField": {"x": [1, 2]}, "another": None}, publisher)
    assert not isinstance(message, Drop)
    assert encode(message) == payload


@pytest.mark.parametrize("event_type", m.AUDIT_EVENT_TYPES)
def test_every_audit_event_type_is_accepted(event_type: str) -> None:
    message = decode("audit.clinic-north", {**AUDIT_SAMPLE, "eventType": event_type}, "dr-lee")
    assert isinstance(message, m.AuditEvent)
    assert message.event_type == event_type


def test_models_are_frozen_and_snake_case_in_python() -> None:
    message = decode(*SAMPLES["CONSULTATION_ENDED"])
    assert isinstance(message, m.ConsultationEnded)
    assert message.provider_id == "dr-lee"
    assert message.summary.follow_up_required is True
    with pytest.raises(ValidationError):
        message.provider_id = "x"  # type: ignore[misc]


def test_python_senders_build_models_by_field_name_and_encode_times_in_one_form() -> None:
    sent = datetime(2026, 11, 22, 14, 3, 7, 123987, tzinfo=UTC)
    chat = m.ChatMessage(id=UUID_A.upper(), sender_id="pt-1", sender_role="patient", text="hi", sent_at=sent)
    wire = encode(chat)
    assert wire["sentAt"] == "2026-11-22T14:03:07.123Z"
    assert wire["id"] == UUID_A  # canonical lower case
    assert wire["senderId"] == "pt-1" and wire["senderRole"] == "patient"


# --- times ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "micros"),
    [
        ("2026-11-22T14:03:07Z", 0),
        ("2026-11-22T14:03:07.1Z", 100000),
        ("2026-11-22T14:03:07.123Z", 123000),
        ("2026-11-22T14:03:07.123456789Z", 123456),
        ("2026-11-22T14:03:07.123+00:00", 123000),
    ],
)
def test_receivers_accept_any_iso_utc_time(text: str, micros: int) -> None:
    assert m.parse_time(text) == datetime(2026, 11, 22, 14, 3, 7, micros, tzinfo=UTC)


@pytest.mark.parametrize(
    "text",
    [
        "2026-11-22T14:03:07",  # naive
        "2026-11-22T14:03:07+01:00",  # local offset
        "2026-11-22T14:03:07.123-05:00",
        "2026-11-22 14:03:07Z",
        "2026-02-30T14:03:07Z",  # not a real date
        "1763820187",
        "",
    ],
)
def test_receivers_refuse_naive_local_and_malformed_times(text: str) -> None:
    channel, payload, publisher = SAMPLES["PROVIDER_JOINED"]
    dropped = decode(channel, {**payload, "timestamp": text}, publisher)
    assert isinstance(dropped, Drop)
    assert dropped.field == "timestamp"
    assert "UTC" in dropped.reason or "real date" in dropped.reason


def test_python_senders_cannot_use_naive_or_local_datetimes() -> None:
    for bad in (datetime(2026, 1, 1), datetime(2026, 1, 1, tzinfo=timezone(timedelta(hours=2)))):
        with pytest.raises(ValidationError):
            m.EndCall(sender_id="a", timestamp=bad)
    with pytest.raises(ValueError, match="timezone-aware"):
        m.format_time(datetime(2026, 1, 1))


def test_format_time_writes_exactly_milliseconds_and_z() -> None:
    assert m.format_time(datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)) == "2026-01-02T03:04:05.000Z"


# --- drops name the field and the reason, never the value -----------------------------------

PHI = "Jane-Doe-1970"


def _summary(duration: object, follow_up: object = True) -> dict[str, Any]:
    return {"summary": {"duration": duration, "followUpRequired": follow_up}}


@pytest.mark.parametrize(
    ("name", "change", "field", "reason"),
    [
        ("PATIENT_CHECKED_IN", {"patientId": "jane.doe"}, "patientId", "letters, digits"),
        ("PATIENT_CHECKED_IN", {"appointmentId": None}, "appointmentId", "letters, digits"),
        ("PATIENT_CHECKED_IN", {"consultationId": "consultation.x"}, "consultationId", "consultation."),
        ("PROVIDER_JOINED", {"state": "in-progress"}, "state", "must be one of"),
        ("PROVIDER_JOINED", {"action": "PROVIDER_LEFT_" + PHI}, "action", "not a known value"),
        (
            "CONSULTATION_ENDED",
            _summary(0),
            "summary.duration",
            "at least 1",
        ),
        (
            "CONSULTATION_ENDED",
            _summary(10**30),
            "summary.duration",
            "at most",
        ),
        (
            "CONSULTATION_ENDED",
            _summary(3, "yes"),
            "summary.followUpRequired",
            "true or false",
        ),
        ("CONSULTATION_ENDED", {"summary": PHI}, "summary", "must be an object"),
        ("CONSULTATION_CANCELLED", {"reason": PHI}, "reason", "must be one of"),
        ("PROVIDER_INVITED", {"role": "surgeon"}, "role", "must be one of"),
        ("DEVICE_STATUS", {"network": "wifi"}, "network", "must be one of"),
        ("chat", {"text": ""}, "text", "at least 1"),
        ("chat", {"text": "x" * 4001}, "text", "at most 4000"),
        ("chat", {"text": 42}, "text", "must be a string"),
        ("chat", {"id": PHI}, "id", "UUID"),
        ("chat", {"senderRole": "admin"}, "senderRole", "must be one of"),
        ("QUEUE_UPDATE", {"position": 0}, "position", "at least 1"),
        ("QUEUE_UPDATE", {"position": 1.0}, "position", "integer"),
        ("QUEUE_UPDATE", {"position": True}, "position", "integer"),
        ("QUEUE_UPDATE", {"estimatedWaitMinutes": -1}, "estimatedWaitMinutes", "at least 0"),
        ("QUEUE_UPDATE", {"priority": "urgent"}, "priority", "must be one of"),
        ("QUEUE_UPDATE", {"timestamp": "2026-11-22T14:03:07"}, "timestamp", "UTC"),  # optional, still checked
        ("PROVIDER_READY", {"timestamp": 1}, "timestamp", "UTC"),
        (
            "ice-candidate",
            {"candidate": {"candidate": "c", "sdpMLineIndex": "0"}},
            "candidate.sdpMLineIndex",
            "integer",
        ),
        ("EMERGENCY_ESCALATION", {"severity": "meh"}, "severity", "must be one of"),
        ("EMERGENCY_ESCALATION", {"status": "resolved"}, "status", "must be one of"),
        ("audit", {"eventType": "HACKED"}, "eventType", "must be one of"),
        ("audit", {"actor": {"userId": "dr-lee", "role": "root"}}, "actor.role", "must be one of"),
        ("audit", {"sequence": 0}, "sequence", "must be at least 1"),
        ("audit", {"deviceId": "kiosk 1"}, "deviceId", ""),
    ],
)
def test_invalid_fields_are_dropped_naming_the_field_and_reason(
    name: str, change: dict[str, Any], field: str, reason: str
) -> None:
    channel, payload, publisher = SAMPLES[name]
    dropped = decode(channel, {**payload, **change}, publisher)
    assert isinstance(dropped, Drop), dropped
    assert dropped.field == field
    assert reason in dropped.reason
    assert PHI not in str(dropped) and "jane" not in str(dropped)


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_each_required_field_is_required(name: str) -> None:
    channel, payload, publisher = SAMPLES[name]
    for key in payload:
        if key in ("state", "status", "metadata"):
            continue  # defaults: a sender may leave the constant out
        if key in ("deviceId", "sequence") and channel.startswith("audit."):
            continue  # optional: an agent of an earlier version sends neither
        if key == "timestamp" and channel.startswith("notification."):
            continue  # optional on notifications (the seeds' provider app sends none)
        dropped = decode(channel, {k: v for k, v in payload.items() if k != key}, publisher)
        assert isinstance(dropped, Drop), key
        assert dropped.field in (key, "action", "type", "eventType"), (key, dropped)


@pytest.mark.parametrize(
    "name", sorted(n for n, (channel, _, _) in SAMPLES.items() if channel.startswith("notification."))
)
def test_a_notification_without_timestamp_is_accepted(name: str) -> None:
    """PROTOCOL.md: a missing notification timestamp never drops a queue update or provider-ready."""
    channel, payload, publisher = SAMPLES[name]
    bare = decode(channel, {k: v for k, v in payload.items() if k != "timestamp"}, publisher)
    stamped = decode(channel, payload, publisher)
    assert isinstance(bare, m.Notification), bare
    assert isinstance(stamped, m.Notification), stamped
    assert bare == decode(channel, {**payload, "timestamp": None}, publisher)
    assert (bare.timestamp, stamped.timestamp) == (None, datetime(2026, 11, 22, 14, 3, 7, 123000, UTC))


def test_a_free_form_key_is_not_repeated_in_the_reason() -> None:
    payload = {**AUDIT_SAMPLE, "metadata": {PHI: 1}, "actor": {PHI: 1}}
    dropped = decode("audit.clinic-north", payload, "dr-lee")
    assert isinstance(dropped, Drop)
    assert PHI not in str(dropped)


# --- channels -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "channel"),
    [
        ("chat", VIDEO),  # chat never goes on the video channel
        ("offer", CONSULTATION),  # signaling only on .video
        ("PATIENT_CHECKED_IN", CONSULTATION),  # the waiting room only
        ("PROVIDER_JOINED", "waiting-room.dr-lee"),
        ("QUEUE_UPDATE", "waiting-room.dr-lee"),  # queue updates go to the patient's own channel
        ("PROVIDER_JOINED", "notification.pt-1"),
        ("EMERGENCY_ESCALATION", CONSULTATION),
        ("audit", "notification.pt-1"),
    ],
)
def test_a_message_on_the_wrong_kind_of_channel_is_dropped(name: str, channel: str) -> None:
    _, payload, publisher = SAMPLES[name]
    assert isinstance(decode(channel, payload, publisher), Drop)


def test_the_waiting_room_carries_check_ins_and_cancellations() -> None:
    _, payload, publisher = SAMPLES["CONSULTATION_CANCELLED"]
    assert isinstance(decode("waiting-room.dr-lee", payload, publisher), m.ConsultationCancelled)


def test_a_check_in_must_name_this_waiting_rooms_consultation() -> None:
    _, payload, publisher = SAMPLES["PATIENT_CHECKED_IN"]
    dropped = decode("waiting-room.dr-other", payload, publisher)
    assert dropped == Drop("consultationId", "must be this waiting room's consultation of patientId")


@pytest.mark.parametrize(
    "channel",
    [
        "consultation.dr-lee",
        "consultation.dr-lee.pt-1.files",
        "consultation.dr-lee.pt-1-pnpres",
        "consultation.dr-lee.pt-1.video.x",
        "queue.cardiology",
        "presence.providers.cardiology",
        "waiting-room.a.b",
        "notification.*",
        "",
        None,
        42,
    ],
)
def test_channels_that_carry_no_modelled_messages_drop_everything(channel: object) -> None:
    dropped = decode(channel, SAMPLES["chat"][1], "pt-1")
    assert isinstance(dropped, Drop)
    assert dropped.field == "channel"


@pytest.mark.parametrize("payload", [None, "text", 42, [1, 2], True])
def test_a_payload_that_is_not_an_object_is_dropped(payload: object) -> None:
    assert decode(CONSULTATION, payload, "pt-1") == Drop("payload", "must be a JSON object")


def test_a_payload_without_a_discriminator_is_dropped() -> None:
    dropped = decode(CONSULTATION, {"text": "hi"}, "pt-1")
    assert isinstance(dropped, Drop)
    assert dropped.field == "action" and "'type'" in dropped.reason


# --- the sender is the publisher ----------------------------------------------------------

IDENTITY = {
    "PATIENT_CHECKED_IN": "patientId",
    "PROVIDER_JOINED": "providerId",
    "CONSULTATION_STARTED": "providerId",
    "WRAP_UP_STARTED": "providerId",
    "CONSULTATION_ENDED": "providerId",
    "PROVIDER_INVITED": "invitedBy",
    "PROVIDER_REMOVED": "removedBy",
    "CONSULTATION_CANCELLED": "cancelledBy",
    "chat": "senderId",
    "chat-read": "readerId",
    "offer": "senderId",
    "answer": "senderId",
    "ice-candidate": "senderId",
    "end-call": "senderId",
    "EMERGENCY_ESCALATION": "escalatedBy",
    "EMERGENCY_RESOLVED": "resolvedBy",
    "audit": "actor.userId",
}


@pytest.mark.parametrize("name", sorted(IDENTITY))
def test_a_forged_sender_is_dropped(name: str) -> None:
    channel, payload, _ = SAMPLES[name]
    dropped = decode(channel, payload, "mallory")
    assert dropped == Drop(IDENTITY[name], "must equal the publisher")


@pytest.mark.parametrize("name", sorted(IDENTITY))
def test_an_unknown_publisher_cannot_vouch_for_a_sender(name: str) -> None:
    channel, payload, _ = SAMPLES[name]
    dropped = decode(channel, payload, None)
    assert isinstance(dropped, Drop) and dropped.field == "publisher"


def test_messages_without_a_sender_field_take_any_publisher() -> None:
    channel, payload, _ = SAMPLES["QUEUE_UPDATE"]
    assert isinstance(decode(channel, payload, None), m.QueueUpdate)
    channel, payload, _ = SAMPLES["DEVICE_STATUS"]
    assert isinstance(decode(channel, payload, "anyone"), m.DeviceStatus)


def test_claimed_sender_names_the_wire_field() -> None:
    message = decode(*SAMPLES["PROVIDER_REMOVED"])
    assert not isinstance(message, Drop)
    assert m.claimed_sender(message) == ("removedBy", "dr-lee")


# --- consent and push meta ----------------------------------------------------------------

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


def test_consent_round_trips_as_a_json_string() -> None:
    consent = m.Consent(granted=True, expires_at=NOW + timedelta(days=1))
    raw = m.encode_consent(consent)
    assert json.loads(raw) == {"granted": True, "expiresAt": "2026-11-23T12:00:00.000Z"}
    assert m.decode_consent(raw) == consent


@pytest.mark.parametrize(
    ("raw", "refusal"),
    [
        ('{"granted": true, "expiresAt": null}', None),
        ('{"granted": true, "expiresAt": "2026-11-22T12:00:01Z"}', None),
        ('{"granted": false, "expiresAt": null}', "not granted"),
        ('{"granted": true, "expiresAt": "2026-11-22T12:00:00Z"}', "expired"),
    ],
)
def test_consent_refusal_says_why(raw: str, refusal: str | None) -> None:
    consent = m.decode_consent(raw)
    assert isinstance(consent, m.Consent)
    assert m.consent_refusal(consent, NOW) == refusal


def test_missing_consent_is_refused_as_missing() -> None:
    assert m.consent_refusal(None, NOW) == "missing"
    assert m.decode_consent(None) == Drop("consent_telehealth", "is missing")


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ("not json", "consent_telehealth"),
        ('["granted"]', "consent_telehealth"),
        ({"granted": True}, "consent_telehealth"),
        ('{"granted": "yes"}', "consent_telehealth.granted"),
        ('{"granted": true, "expiresAt": "2026-11-22T12:00:00"}', "consent_telehealth.expiresAt"),
        ('{"expiresAt": null}', "consent_telehealth.granted"),
    ],
)
def test_unusable_consent_is_a_drop_naming_the_field(raw: object, field: str) -> None:
    dropped = m.decode_consent(raw)
    assert isinstance(dropped, Drop)
    assert dropped.field == field


def test_emergency_push_meta_carries_severity_and_id_but_no_reason() -> None:
    meta = m.emergency_push_meta("critical", UUID_A)
    text = json.dumps(meta)
    assert "CRITICAL" in text and UUID_A in text
    assert meta["pn_apns"]["aps"]["alert"]["title"] == "EMERGENCY"
    assert meta["pn_gcm"]["notification"]["priority"] == "high"
    with pytest.raises(ValueError, match="escalationId"):
        m.emergency_push_meta("critical", "chest pain")  # a reason cannot sneak in as the ID
    with pytest.raises(ValueError, match="severity"):
        m.emergency_push_meta("chest pain", UUID_A)  # type: ignore[arg-type]


# --- decode never raises ------------------------------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**40), max_value=10**40)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=30),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.text(max_size=12) | st.integers() | st.none(), children, max_size=5)
    ),
    max_leaves=30,
)
field_names = st.sampled_from(
    sorted({key for _, payload, _ in SAMPLES.values() for key in payload} | {"candidate", "summary", "actor"})
)
tags = st.sampled_from(
    sorted({str(payload.get("action") or payload.get("type")) for _, payload, _ in SAMPLES.values()})
)
channel_names = st.sampled_from(sorted({channel for channel, _, _ in SAMPLES.values()})) | st.text(
    max_size=80
)


def _deep(depth: int) -> Any:
    value: Any = "x"
    for _ in range(depth):
        value = {"summary": value, "candidate": [value]}
    return value


@settings(max_examples=400, deadline=None)
@given(channel=channel_names, payload=json_values, publisher=st.none() | st.text(max_size=10) | st.integers())
def test_decode_never_raises_for_arbitrary_json(channel: object, payload: object, publisher: object) -> None:
    result = decode(channel, payload, publisher)
    assert isinstance(result, Drop | m.WireModel)


@settings(max_examples=400, deadline=None)
@given(
    name=st.sampled_from(sorted(SAMPLES)),
    overrides=st.dictionaries(field_names | st.integers(), json_values, max_size=4),
    tag=tags,
)
def test_decode_never_raises_for_mutated_valid_messages(
    name: str, overrides: dict[Any, Any], tag: str
) -> None:
    channel, payload, publisher = SAMPLES[name]
    mutated = {**payload, **overrides}
    if "action" in payload:
        mutated["action"] = tag
    result = decode(channel, mutated, publisher)
    assert isinstance(result, Drop | m.WireModel)
    if isinstance(result, Drop):
        # The reason is built from schema names and fixed texts only.
        for value in overrides.values():
            if isinstance(value, str) and len(value) > 3 and value not in str(m.ConsultationState):
                assert value not in result.reason


@pytest.mark.parametrize("depth", [10, 200, 2000])
def test_deep_nesting_is_dropped_not_raised(depth: int) -> None:
    channel, payload, publisher = SAMPLES["CONSULTATION_ENDED"]
    assert isinstance(decode(channel, {**payload, "summary": _deep(depth)}, publisher), Drop)
    assert isinstance(decode(channel, _deep(depth), publisher), Drop)
