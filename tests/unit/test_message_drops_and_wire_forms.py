"""What a dropped message says, exactly, and the exact wire forms senders write (mutants that
survived the broader tests in test_messages.py changed a reason, a bound or a wire text and
nothing noticed). A receiver logs these Drops; an integrator reads them to fix a sender."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta, timezone
from types import MappingProxyType
from typing import Annotated, Any
from zoneinfo import ZoneInfo

import pytest
from pydantic import TypeAdapter, ValidationError

from telehealth_client.protocol import messages as m
from telehealth_client.protocol.messages import Drop, decode
from tests.support.messages import AUDIT_SAMPLE, SAMPLES, UUID_A

ID_TEXT = "must be 1-64 characters of letters, digits, '_' and '-'"


def changed(name: str, **fields: Any) -> tuple[str, dict[str, Any], str]:
    channel, payload, publisher = SAMPLES[name]
    return channel, {**payload, **fields}, publisher


def candidate(**fields: Any) -> tuple[str, dict[str, Any], str]:
    return changed("ice-candidate", candidate={"candidate": "c", **fields})


def summary(duration: object) -> tuple[str, dict[str, Any], str]:
    return changed("CONSULTATION_ENDED", summary={"duration": duration, "followUpRequired": False})


def audit(**fields: Any) -> tuple[str, dict[str, Any], str]:
    return "audit.clinic-north", {**AUDIT_SAMPLE, **fields}, "dr-lee"


@pytest.mark.parametrize(
    ("message", "drop"),
    [
        # Times: each way a time can be wrong has its own reason.
        (
            changed("PROVIDER_JOINED", timestamp=1763820187),
            ("timestamp", "must be an ISO-8601 UTC time string"),
        ),
        (changed("PROVIDER_JOINED", timestamp=None), ("timestamp", "must be an ISO-8601 UTC time string")),
        (
            changed("PROVIDER_JOINED", timestamp="2026-11-22T14:03:07"),
            ("timestamp", "must be an ISO-8601 UTC time such as 2026-11-22T14:03:07.123Z"),
        ),
        (
            changed("PROVIDER_JOINED", timestamp="2026-02-30T14:03:07Z"),
            ("timestamp", "must be a real date and time"),
        ),
        # IDs, UUIDs, consultation IDs and codes.
        (changed("PROVIDER_JOINED", providerId="x" * 65), ("providerId", ID_TEXT)),
        (changed("chat", id="not-a-uuid"), ("id", "must be a version-4 UUID")),
        (changed("chat", id=7), ("id", "must be a version-4 UUID")),
        (
            changed("PROVIDER_READY", consultationId="consultation.dr-lee"),
            ("consultationId", "must be 'consultation.{providerId}.{patientId}'"),
        ),
        (
            changed("PROVIDER_READY", consultationId=5),
            ("consultationId", "must be 'consultation.{providerId}.{patientId}'"),
        ),
        (audit(action="A B"), ("action", ID_TEXT)),
        (audit(action=3), ("action", ID_TEXT)),
        (audit(resource={"type": "x" * 65, "id": "r"}), ("resource.type", ID_TEXT)),
        # Limits say the bound.
        (summary(0), ("summary.duration", "must be at least 1")),
        (summary(1441), ("summary.duration", "must be at most 1440")),
        (summary(5.0), ("summary.duration", "must be an integer")),
        (changed("QUEUE_UPDATE", position=10_001), ("position", "must be at most 10000")),
        (
            changed("QUEUE_UPDATE", estimatedWaitMinutes=1441),
            ("estimatedWaitMinutes", "must be at most 1440"),
        ),
        (changed("chat", text=""), ("text", "must be at least 1 characters")),
        (changed("chat", text="x" * 4001), ("text", "must be at most 4000 characters")),
        (changed("offer", sdp="x" * (32 * 1024 + 1)), ("sdp", "must be at most 32768 characters")),
        (changed("PROVIDER_READY", title="t" * 201), ("title", "must be at most 200 characters")),
        (changed("PROVIDER_READY", body="b" * 1001), ("body", "must be at most 1000 characters")),
        (changed("EMERGENCY_ESCALATION", reason=""), ("reason", "must be at least 1 characters")),
        (candidate(sdpMLineIndex=1024), ("candidate.sdpMLineIndex", "must be at most 1023")),
        (candidate(sdpMLineIndex=-1), ("candidate.sdpMLineIndex", "must be at least 0")),
        (candidate(sdpMid="m" * 65), ("candidate.sdpMid", "must be at most 64 characters")),
        (
            candidate(usernameFragment="u" * 257),
            ("candidate.usernameFragment", "must be at most 256 characters"),
        ),
        (candidate(sdpMid=5), ("candidate.sdpMid", "must be a string")),
        (
            audit(actor={"userId": "dr-lee", "role": "provider", "ipAddress": "1" * 65}),
            ("actor.ipAddress", "must be at most 64 characters"),
        ),
        (audit(resource={"type": "t", "id": ""}), ("resource.id", "must be at least 1 characters")),
        # Types and shapes.
        (changed("ice-candidate", candidate="c"), ("candidate", "must be an object")),
        (audit(metadata=[1]), ("metadata", "must be an object")),
        # A key of a free-form object is shown by position only if it is a number, never by value.
        (audit(metadata={1: "x"}), ("metadata[1]", "must be a string")),
        (changed("PROVIDER_JOINED", action=5), ("action", "is not a known value")),
        (changed("chat", type="chat-edit"), ("type", "is not a known value")),
        (changed("PROVIDER_JOINED", state="x"), ("state", "must be one of 'connecting'")),
        (
            changed("CONSULTATION_CANCELLED", reason="x"),
            (
                "reason",
                "must be one of 'patient-left', 'no-show', 'provider-cancelled', 'consent-revoked'"
                " or 'technical'",
            ),
        ),
        # An error pydantic names but this module has no text for: its type, never the value.
        (changed("chat", text="\ud800"), ("text", "is invalid (string_unicode)")),
        # Channel, payload and publisher.
        (changed("PROVIDER_JOINED", providerId="dr-lee"), None),
        (
            ("consultation.dr-lee.pt-1.files", SAMPLES["chat"][1], "pt-1"),
            ("channel", "carries no modelled messages"),
        ),
        (("c" * 201, SAMPLES["chat"][1], "pt-1"), ("channel", "is not a channel that carries messages")),
        ((SAMPLES["chat"][0], {"text": "hi"}, "pt-1"), ("action", "is required ('action' or 'type')")),
        (("waiting-room.dr-lee", {"text": "hi"}, "pt-1"), ("action", "is required ('action')")),
        (("notification.pt-1", {"text": "hi"}, "pt-1"), ("type", "is required ('type')")),
        (("audit.clinic-north", {"text": "hi"}, "pt-1"), ("eventType", "is required ('eventType')")),
        ((SAMPLES["chat"][0], SAMPLES["chat"][1], 42), ("publisher", "must be a string")),
        (
            (SAMPLES["chat"][0], SAMPLES["chat"][1], None),
            ("publisher", "is unknown, so senderId cannot be checked"),
        ),
        (
            (SAMPLES["audit"][0], AUDIT_SAMPLE, None),
            ("publisher", "is unknown, so actor.userId cannot be checked"),
        ),
        (
            ("consultation.dr-lee.pt-1", *SAMPLES["PATIENT_CHECKED_IN"][1:]),
            ("action", "is not allowed on this channel"),
        ),
    ],
)
def test_each_drop_names_the_field_and_the_exact_reason(
    message: tuple[str, dict[str, Any], str], drop: tuple[str, str] | None
) -> None:
    result = decode(*message)
    if drop is None:
        assert not isinstance(result, Drop), result
    else:
        assert result == Drop(*drop)
        assert str(result) == f"{drop[0]}: {drop[1]}"


@pytest.mark.parametrize(
    ("name", "channel"),
    [
        ("chat", "consultation.dr-lee.pt-1"),
        ("offer", "consultation.dr-lee.pt-1.video"),
        ("PROVIDER_READY", "notification.pt-1"),
        ("PATIENT_CHECKED_IN", "waiting-room.dr-lee"),
        ("EMERGENCY_RESOLVED", "emergency.cardiology"),
        ("audit", "audit.clinic-north"),
    ],
)
def test_the_longest_ids_give_a_channel_that_still_carries_messages(name: str, channel: str) -> None:
    _, payload, publisher = SAMPLES[name]
    assert isinstance(decode(channel, payload, publisher), m.WireModel)


@pytest.mark.parametrize(
    "channel",
    [
        "consultation.dr-lee.pt-1.files.x",
        "consultation.dr-lee.pt-1.audio",
        "consultation.dr-lee.pt.1",
        "consultation.dr lee.pt-1",
        "notification.pt 1",
        "audit",
        "emergency.a.b",
        "notification.pt-1-pnpres",
    ],
)
def test_channels_of_no_known_shape_carry_nothing(channel: str) -> None:
    assert decode(channel, SAMPLES["DEVICE_STATUS"][1], "pt-1") == Drop(
        "channel", "is not a channel that carries messages"
    )


def test_the_channel_kind_and_ids_are_read_from_the_name() -> None:
    assert m.parse_channel("consultation.dr-lee.pt-1") == m.ChannelInfo(
        m.ChannelKind.CONSULTATION, ("dr-lee", "pt-1")
    )
    assert m.parse_channel("consultation.dr-lee.pt-1.video") == m.ChannelInfo(
        m.ChannelKind.VIDEO, ("dr-lee", "pt-1")
    )
    assert m.parse_channel("consultation.dr-lee.pt-1.files") == m.ChannelInfo(
        m.ChannelKind.FILES, ("dr-lee", "pt-1")
    )
    assert m.parse_channel("waiting-room.dr-lee") == m.ChannelInfo(m.ChannelKind.WAITING_ROOM, ("dr-lee",))
    assert m.parse_channel("notification.pt-1") == m.ChannelInfo(m.ChannelKind.NOTIFICATION, ("pt-1",))
    assert m.parse_channel("emergency.er") == m.ChannelInfo(m.ChannelKind.EMERGENCY, ("er",))
    assert m.parse_channel("audit.org") == m.ChannelInfo(m.ChannelKind.AUDIT, ("org",))


# --- times ------------------------------------------------------------------------------------


def test_an_aware_utc_datetime_from_any_utc_zone_is_kept_as_utc() -> None:
    sent = datetime(2026, 1, 1, 12, 0, tzinfo=ZoneInfo("Etc/UTC"))
    call = m.EndCall(sender_id="pt-1", timestamp=sent)
    assert call.timestamp == sent and call.timestamp.tzinfo is UTC


@pytest.mark.parametrize(
    "sent", [datetime(2026, 1, 1), datetime(2026, 1, 1, tzinfo=timezone(timedelta(hours=-5)))]
)
def test_a_python_sender_is_told_why_a_datetime_is_refused(sent: datetime) -> None:
    with pytest.raises(ValueError, match="must be a UTC time"):
        m.EndCall(sender_id="pt-1", timestamp=sent)


def test_a_fraction_is_cut_to_microseconds_not_rounded() -> None:
    assert m.parse_time("2026-11-22T14:03:07.9999999Z").microsecond == 999999
    assert m.parse_time("2026-11-22T14:03:07.05z") == datetime(2026, 11, 22, 14, 3, 7, 50000, tzinfo=UTC)


def test_format_time_writes_utc_and_cuts_to_milliseconds() -> None:
    local = datetime(2026, 12, 31, 23, 59, 58, 999999, tzinfo=timezone(timedelta(hours=2)))
    assert m.format_time(local) == "2026-12-31T21:59:58.999Z"


# --- consent ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "drop"),
    [
        (None, ("consent_telehealth", "is missing")),
        (5, ("consent_telehealth", "must be a JSON string")),
        (b'{"granted": true}', ("consent_telehealth", "must be a JSON string")),
        ("nope", ("consent_telehealth", "is not valid JSON")),
        ("[" * 100_000, ("consent_telehealth", "is not valid JSON")),
        ('["granted"]', ("consent_telehealth", "must be a JSON object")),
        ('{"granted": "yes"}', ("consent_telehealth.granted", "must be true or false")),
        ('{"expiresAt": null}', ("consent_telehealth.granted", "is required")),
        (
            '{"granted": true, "expiresAt": 3}',
            ("consent_telehealth.expiresAt", "must be an ISO-8601 UTC time string"),
        ),
    ],
)
def test_unusable_consent_says_exactly_why(raw: object, drop: tuple[str, str]) -> None:
    assert m.decode_consent(raw) == Drop(*drop)


def test_consent_without_an_expiry_never_expires_and_is_written_compactly() -> None:
    consent = m.decode_consent('{"granted": true}')
    assert consent == m.Consent(granted=True, expires_at=None)
    assert m.consent_refusal(consent, datetime(9999, 1, 1, tzinfo=UTC)) is None
    assert m.encode_consent(m.Consent(granted=False)) == '{"granted":false,"expiresAt":null}'
    expiring = m.Consent(granted=True, expires_at=datetime(2027, 1, 31, 23, 59, 59, tzinfo=UTC))
    assert m.encode_consent(expiring) == '{"granted":true,"expiresAt":"2027-01-31T23:59:59.000Z"}'


def test_consent_not_granted_is_refused_whatever_its_expiry() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    expired = m.Consent(granted=False, expires_at=now - timedelta(days=1))
    assert m.consent_refusal(expired, now) == "not granted"


# --- emergency push meta ------------------------------------------------------------------------


def test_emergency_push_meta_is_exactly_the_severity_and_the_lower_case_id() -> None:
    text = f"LIFE-THREATENING escalation {UUID_A}"
    assert m.emergency_push_meta("life-threatening", UUID_A.upper()) == {
        "pn_apns": {"aps": {"alert": {"title": "EMERGENCY", "body": text}, "sound": "emergency.aiff"}},
        "pn_gcm": {"notification": {"title": "EMERGENCY", "body": text, "priority": "high"}},
    }


@pytest.mark.parametrize(
    ("severity", "escalation_id", "message"),
    [
        ("high", UUID_A, "severity: must be urgent, critical or life-threatening"),
        ("urgent", 42, "escalationId: must be a version-4 UUID"),
        ("urgent", UUID_A + "0", "escalationId: must be a version-4 UUID"),
    ],
)
def test_emergency_push_meta_refuses_naming_the_field(
    severity: Any, escalation_id: Any, message: str
) -> None:
    with pytest.raises(ValueError) as caught:
        m.emergency_push_meta(severity, escalation_id)
    assert str(caught.value) == message


def test_every_severity_makes_push_meta() -> None:
    for severity in ("urgent", "critical", "life-threatening"):
        meta = m.emergency_push_meta(severity, UUID_A)
        assert json.dumps(meta).count(severity.upper()) == 2


def test_format_time_writes_utc_whatever_the_machines_zone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    try:
        sent = datetime(2026, 7, 1, 12, 0, 0, 5000, tzinfo=timezone(timedelta(hours=2)))
        assert m.format_time(sent) == "2026-07-01T10:00:00.005Z"
    finally:
        monkeypatch.undo()
        time.tzset()


def test_format_time_refuses_a_naive_time_naming_it() -> None:
    with pytest.raises(ValueError) as caught:
        m.format_time(datetime(2026, 1, 1))
    assert str(caught.value) == "time: must be timezone-aware"


# --- helpers the models are built with at import ----------------------------------------------


def test_text_bounds_a_string_at_both_ends() -> None:
    bounded = TypeAdapter(Annotated[str, m._text(3, min_chars=2)])
    assert bounded.validate_python("ab") == "ab" and bounded.validate_python("abc") == "abc"
    for bad in ("a", "abcd"):
        with pytest.raises(ValidationError):
            bounded.validate_python(bad)
    required = TypeAdapter(Annotated[str, m._text(3)])
    assert required.validate_python("a") == "a"
    with pytest.raises(ValidationError):
        required.validate_python("")


def test_schema_names_are_the_wire_field_names_and_the_message_tags() -> None:
    # The only names a Drop's field may repeat: every alias (camelCase) and every action or type.
    fields, tags = m._schema_names()
    assert {"senderId", "sdpMLineIndex", "followUpRequired", "eventType", "ipAddress", "expiresAt"} <= fields
    assert {"upToId", "estimatedWaitMinutes", "invitedProviderId", "candidate", "metadata"} <= fields
    assert "sender_id" not in fields and "follow_up_required" not in fields
    assert {"PATIENT_CHECKED_IN", "CONSULTATION_ENDED", "chat-read", "ice-candidate", "end-call"} <= tags
    assert {"QUEUE_UPDATE", "EMERGENCY_ESCALATION", "EMERGENCY_RESOLVED", "offer"} <= tags
    # Defaults of other fields (a state, a status) are values, not tags.
    assert not {"connecting", "completed", "active", "resolved"} & tags


@pytest.mark.parametrize("name", ["PROVIDER_JOINED", "chat", "audit"])
def test_a_mapping_that_is_not_a_plain_object_is_dropped_as_the_whole_payload(name: str) -> None:
    channel, payload, publisher = SAMPLES[name]
    assert decode(channel, MappingProxyType(payload), publisher) == Drop("payload", "must be an object")


def test_a_naive_datetime_in_a_payload_is_dropped_as_not_utc() -> None:
    # A Python caller may hand decode a dict it built itself, datetimes included.
    channel, payload, publisher = SAMPLES["PROVIDER_JOINED"]
    result = decode(channel, {**payload, "timestamp": datetime(2026, 1, 1)}, publisher)
    assert result == Drop("timestamp", "must be a UTC time")


def test_a_python_sender_reads_exactly_why_its_datetime_is_refused() -> None:
    with pytest.raises(ValidationError) as caught:
        m.EndCall(sender_id="pt-1", timestamp=datetime(2026, 1, 1))
    (error,) = caught.value.errors()
    assert (error["type"], error["msg"], error["loc"]) == ("th_time", "must be a UTC time", ("timestamp",))


class HostileMapping(dict[str, Any]):
    """A caller's mapping that fails while being read: decode's last resort, not an exception."""

    def __contains__(self, key: object) -> bool:
        raise TypeError("unreadable")


def test_a_payload_that_fails_while_being_read_is_dropped_not_raised() -> None:
    channel, payload, publisher = SAMPLES["chat"]
    assert decode(channel, HostileMapping(payload), publisher) == Drop("payload", "could not be validated")
