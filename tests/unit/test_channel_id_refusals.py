"""What a refused ID says, exactly: the field it names and the reason (mutants that survived the
broader tests in test_channels.py changed a field name or a reason and nothing noticed)."""

from collections.abc import Callable

import pytest

from telehealth_client.protocol import channels
from telehealth_client.protocol.channels import ConsultationChannels, InvalidIdError, validate_id


def refusal(call: Callable[[], object]) -> InvalidIdError:
    with pytest.raises(InvalidIdError) as caught:
        call()
    return caught.value


def test_an_invalid_id_error_carries_its_field_and_reason() -> None:
    error = InvalidIdError("userId", "must not be empty")
    assert (error.field, error.reason, str(error)) == (
        "userId",
        "must not be empty",
        "userId: must not be empty",
    )


def test_the_field_is_called_id_when_the_caller_names_none() -> None:
    assert str(refusal(lambda: validate_id(""))) == "id: must not be empty"


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (42, "must be a string, got int"),
        (None, "must be a string, got NoneType"),
        ("", "must not be empty"),
        ("a" * 65, "must be at most 64 characters, got 65"),
        # Upper and lower case letters and digits are fine; each bad character is listed once, sorted.
        ("Dr.Smith*9.x", "may contain only letters, digits, '_' and '-' (found '*' '.')"),
        ("ab cD", "may contain only letters, digits, '_' and '-' (found ' ')"),
    ],
)
def test_each_refusal_names_the_field_and_the_exact_reason(value: object, reason: str) -> None:
    error = refusal(lambda: validate_id(value, "patientId"))
    assert (error.field, error.reason) == ("patientId", reason)
    assert str(error) == f"patientId: {reason}"


@pytest.mark.parametrize(
    ("build", "field"),
    [
        (lambda bad: channels.consultation(bad, "patient-1"), "providerId"),
        (lambda bad: channels.consultation("dr-lee", bad), "patientId"),
        (channels.waiting_room, "providerId"),
        (channels.queue, "departmentId"),
        (channels.notification, "userId"),
        (channels.provider_presence, "departmentId"),
        (channels.audit, "organizationId"),
        (channels.emergency, "departmentId"),
    ],
)
def test_every_channel_builder_names_the_id_it_refuses(build: Callable[[str], str], field: str) -> None:
    assert refusal(lambda: build("a.b")).field == field
    assert refusal(lambda: build("*")).field == field


@pytest.mark.parametrize(
    "value", [42, None, "consultation", "consultation.a", "queue.a.b", "consultation.a.b.c"]
)
def test_a_malformed_consultation_id_is_refused_as_such(value: object) -> None:
    error = refusal(lambda: ConsultationChannels.parse(value))  # type: ignore[arg-type]
    assert (error.field, error.reason) == (
        "consultationId",
        "must be 'consultation.{providerId}.{patientId}'",
    )


def test_a_bad_part_of_a_consultation_id_is_named() -> None:
    assert refusal(lambda: ConsultationChannels.parse("consultation.*.patient-1")).field == "providerId"
    assert refusal(lambda: ConsultationChannels.parse("consultation.dr-lee.*")).field == "patientId"
    assert refusal(lambda: ConsultationChannels.parse("consultation..patient-1")).field == "providerId"


def test_parsed_channels_name_every_channel_of_the_consultation() -> None:
    parsed = ConsultationChannels.parse("consultation.dr-lee.patient-1")
    assert parsed.main == "consultation.dr-lee.patient-1"
    assert parsed.video == "consultation.dr-lee.patient-1.video"
    assert parsed.files == "consultation.dr-lee.patient-1.files"
