import pytest
from hypothesis import given
from hypothesis import strategies as st

from telehealth_client.protocol import channels
from telehealth_client.protocol.channels import ConsultationChannels, InvalidIdError, validate_id


@pytest.mark.parametrize("value", ["a", "dr-smith", "patient_abc123", "A" * 64])
def test_valid_ids_pass(value: str) -> None:
    assert validate_id(value, "userId") == value


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("dr.smith", "'.'"),
        ("*", "'*'"),
        ("a,b", "','"),
        ("a/b", "'/'"),
        ("a b", "' '"),
        ("", "must not be empty"),
        ("A" * 65, "at most 64"),
        ("é", "'é'"),
    ],
)
def test_invalid_ids_are_rejected_naming_the_field(value: str, reason: str) -> None:
    with pytest.raises(InvalidIdError) as caught:
        validate_id(value, "patientId")
    assert caught.value.field == "patientId"
    assert reason in str(caught.value)
    assert str(caught.value).startswith("patientId: ")


def test_non_string_id_is_rejected() -> None:
    with pytest.raises(InvalidIdError, match="must be a string"):
        validate_id(42, "providerId")


@given(st.text(min_size=1, max_size=64))
def test_a_valid_id_never_contains_a_channel_separator_or_wildcard(value: str) -> None:
    try:
        validate_id(value)
    except InvalidIdError:
        return
    assert "." not in value and "*" not in value and "," not in value


def test_channel_names_follow_the_protocol() -> None:
    consultation = channels.consultation("dr-smith", "patient-abc123")
    assert consultation == "consultation.dr-smith.patient-abc123"
    assert channels.video(consultation) == "consultation.dr-smith.patient-abc123.video"
    assert channels.files(consultation) == "consultation.dr-smith.patient-abc123.files"
    assert channels.waiting_room("dr-smith") == "waiting-room.dr-smith"
    assert channels.queue("cardiology") == "queue.cardiology"
    assert channels.notification("dr-smith") == "notification.dr-smith"
    assert channels.provider_presence("cardiology") == "presence.providers.cardiology"
    assert channels.audit("clinic-north") == "audit.clinic-north"
    assert channels.emergency("oncology") == "emergency.oncology"
    assert channels.presence(consultation) == consultation + "-pnpres"


def test_a_dotted_id_cannot_forge_another_channel() -> None:
    with pytest.raises(InvalidIdError):
        channels.consultation("dr-smith", "other.video")


def test_consultation_id_round_trips() -> None:
    parsed = ConsultationChannels.parse("consultation.dr-smith.patient-1")
    assert (parsed.provider_id, parsed.patient_id) == ("dr-smith", "patient-1")
    assert parsed.video == "consultation.dr-smith.patient-1.video"
    for bad in ["consultation.dr-smith", "waiting-room.a.b", "consultation.a.b.c", "consultation.a.*"]:
        with pytest.raises(InvalidIdError):
            ConsultationChannels.parse(bad)


@pytest.mark.parametrize("user_id", ["x-pnpres", "pat-1-pnpres"])
def test_an_id_ending_like_a_presence_channel_is_refused(user_id: str) -> None:
    # Otherwise consultation.dr.x-pnpres is both a consultation and patient x's presence channel.
    with pytest.raises(InvalidIdError, match="patientId: must not end with '-pnpres'"):
        channels.consultation("dr", user_id)
    assert channels.validate_id("pnpres-first") == "pnpres-first"
