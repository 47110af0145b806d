"""docs/protocol.md documents what the code models, and its examples are what the code accepts.

Everything checked is found by introspecting the models (``protocol.messages``), never from a hand
list: every message of the ``Message`` union (and ``Consent``) must have a section in the document
whose field table lists each of its wire fields, with the right "required" answer and the model's
limits; every value of every ``Literal`` or enum field, every consultation state and every consent
refusal must appear in backticks. Each JSON example marked ``<!-- example ... -->`` must decode (or
validate) with the code that reads it on the other side, and every message must have one.
"""

from __future__ import annotations

import json
import re
import types
from collections.abc import Iterator
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Literal, Union, cast, get_args, get_origin

import annotated_types
import pytest
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from telehealth_client.protocol import messages as m
from telehealth_client.security import clinic_client
from telehealth_devstack.clinic import models as clinic_models

DOC_PATH = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"

# The two models that have no action/type tag, and the heading of their section.
UNTAGGED_SECTIONS: dict[type[BaseModel], str] = {m.AuditEvent: "Audit events", m.Consent: "Consent"}

# ---------------------------------------------------------------------------------------------
# What the code models


def message_models() -> tuple[type[m.WireModel], ...]:
    """Every message model of the ``Message`` union, plus the consent record."""
    return (*get_args(m.Message), m.Consent)


def tag_of(model: type[BaseModel]) -> str | None:
    """The model's ``action`` or ``type`` discriminator value, if it has one."""
    for name in ("action", "type"):
        info = model.model_fields.get(name)
        if info is not None and isinstance(info.default, str):
            return info.default
    return None


@dataclass(frozen=True)
class WireField:
    path: str  # dotted camelCase path, e.g. summary.followUpRequired
    required: bool
    values: tuple[str, ...]  # the allowed values of a Literal or enum field
    bounds: tuple[int, ...]  # length or numeric limits (min_length, max_length, ge, le, ...)


def _bounds(metadata: list[Any]) -> list[int]:
    found: list[int] = []
    for item in metadata:
        if isinstance(item, FieldInfo):  # a Field(...) inside an Annotated inside an Optional
            found.extend(_bounds(item.metadata))
            continue
        for attr in ("min_length", "max_length", "ge", "le", "gt", "lt"):
            value = getattr(item, attr, None)
            if isinstance(value, int) and not isinstance(value, bool):
                found.append(value)
        if isinstance(item, annotated_types.Interval):
            found.extend(v for v in (item.ge, item.le, item.gt, item.lt) if isinstance(v, int))
    return found


def _walk_type(annotation: Any) -> tuple[list[str], list[int], list[type[BaseModel]]]:
    """Allowed values, bounds and nested models inside one annotation."""
    values: list[str] = []
    bounds: list[int] = []
    nested: list[type[BaseModel]] = []
    origin = get_origin(annotation)
    if origin is Annotated:
        inner, *metadata = get_args(annotation)
        bounds.extend(_bounds(metadata))
        sub = _walk_type(inner)
        return values + sub[0], bounds + sub[1], nested + sub[2]
    if origin is Literal:
        return [str(v) for v in get_args(annotation)], bounds, nested
    if origin in (Union, types.UnionType):
        for arg in get_args(annotation):
            sub = _walk_type(arg)
            values += sub[0]
            bounds += sub[1]
            nested += sub[2]
        return values, bounds, nested
    if isinstance(annotation, type) and issubclass(annotation, Enum):
        return [str(member.value) for member in annotation], bounds, nested
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return values, bounds, [annotation]
    return values, bounds, nested


def wire_fields(model: type[BaseModel], prefix: str = "") -> Iterator[WireField]:
    """Every wire field of ``model``, nested models' fields as dotted paths."""
    for name, info in model.model_fields.items():
        path = prefix + (info.alias or name)
        values, bounds, nested = _walk_type(info.annotation)
        bounds = _bounds(info.metadata) + bounds
        # A discriminator has a default in Python but must be on the wire to pick the model.
        required = info.is_required() or (name in ("action", "type") and isinstance(info.default, str))
        yield WireField(path, required, tuple(values), tuple(sorted(set(bounds))))
        for sub_model in nested:
            yield from wire_fields(sub_model, path + ".")


# ---------------------------------------------------------------------------------------------
# What the document says


@dataclass(frozen=True)
class Heading:
    level: int
    title: str
    line: int


class Doc:
    def __init__(self, text: str) -> None:
        self.text = text
        self.lines = text.splitlines()
        self.headings = [
            Heading(len(match.group(1)), match.group(2), number)
            for number, line in enumerate(self.lines)
            if (match := re.match(r"(#{1,6}) (.*)", line))
        ]

    def _end(self, index: int, *, any_level: bool) -> int:
        heading = self.headings[index]
        for later in self.headings[index + 1 :]:
            if any_level or later.level <= heading.level:
                return later.line
        return len(self.lines)

    def scope(self, index: int) -> list[str]:
        """A section's lines plus the introductions (text before the first sub-heading) of its parents.

        Fields shared by a group of messages (every notification's ``title``) are documented once,
        in the group's introduction.
        """
        heading = self.headings[index]
        lines = self.lines[heading.line : self._end(index, any_level=False)]
        level = heading.level
        for parent_index in range(index - 1, -1, -1):
            parent = self.headings[parent_index]
            if parent.level < level:
                lines += self.lines[parent.line : self._end(parent_index, any_level=True)]
                level = parent.level
        return lines

    def sections_for(self, model: type[BaseModel]) -> list[int]:
        tag = tag_of(model)
        if tag is not None:
            return [i for i, h in enumerate(self.headings) if f"`{tag}`" in h.title]
        title = UNTAGGED_SECTIONS[model]
        return [i for i, h in enumerate(self.headings) if title in h.title]

    def section_text(self, title: str) -> str:
        for index, heading in enumerate(self.headings):
            if title in heading.title:
                return "\n".join(self.lines[heading.line : self._end(index, any_level=False)])
        raise AssertionError(f"docs/protocol.md has no section titled {title!r}")


def field_row(scope: list[str], path: str) -> list[str] | None:
    """The cells of the first table row documenting ``path`` in ``scope``."""
    for line in scope:
        if line.startswith(f"| `{path}` |"):
            cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
            if len(cells) >= 4:  # field | type | required | rules (not another table naming it)
                return cells
    return None


def problems_with(doc: Doc, model: type[BaseModel]) -> list[str]:
    """What the document fails to say about ``model``; empty when a section says all of it."""
    sections = doc.sections_for(model)
    if not sections:
        return [f"no section heading names {tag_of(model) or UNTAGGED_SECTIONS[model]!r}"]
    best: list[str] | None = None
    # The same tag may name two messages (EMERGENCY_ESCALATION: notification and emergency action).
    for index in sections:
        scope = doc.scope(index)
        text = "\n".join(scope)
        found: list[str] = []
        for wire in wire_fields(model):
            row = field_row(scope, wire.path)
            if row is None:
                found.append(f"`{wire.path}`: no field-table row")
                continue
            if wire.required != (row[2] == "yes"):
                found.append(f"`{wire.path}`: required should say {'yes' if wire.required else 'not yes'}")
            for bound in wire.bounds:
                if not re.search(rf"(?<![\d.]){bound}(?![\d.])", row[3]):
                    found.append(f"`{wire.path}`: limit {bound} missing from its row")
            for value in wire.values:
                if f"`{value}`" not in text:
                    found.append(f"`{wire.path}`: value `{value}` not documented")
        if best is None or len(found) < len(best):
            best = found
    return best or []


# ---------------------------------------------------------------------------------------------
# The tests


@pytest.fixture(scope="module")
def doc() -> Doc:
    return Doc(DOC_PATH.read_text(encoding="utf-8"))


def _model_id(model: type[BaseModel]) -> str:
    return tag_of(model) or model.__name__


@pytest.mark.parametrize("model", message_models(), ids=_model_id)
def test_each_message_has_a_section_with_every_field(doc: Doc, model: type[BaseModel]) -> None:
    assert problems_with(doc, model) == []


def _all_values() -> list[str]:
    values = {value for model in message_models() for wire in wire_fields(model) for value in wire.values}
    values.update(str(state) for state in m.ConsultationState)
    values.update(get_args(m.ConsentRefusal))
    return sorted(values)


@pytest.mark.parametrize("value", _all_values())
def test_every_modelled_value_is_documented(doc: Doc, value: str) -> None:
    """Every action, type, audit eventType, cancel reason, severity, state, verdict, role ..."""
    assert f"`{value}`" in doc.text


def test_the_values_found_include_every_kind_the_brief_names() -> None:
    # Guards the introspection itself: had it missed a union or a nested Literal, these would be absent.
    values = set(_all_values())
    assert set(get_args(m.CancelReason)) <= values
    assert set(m.AUDIT_EVENT_TYPES) <= values
    assert set(get_args(m.EmergencySeverity)) | set(get_args(m.AuditSeverity)) <= values
    assert {tag_of(model) for model in get_args(m.LifecycleAction)} <= values


@pytest.mark.parametrize("state", list(m.ConsultationState), ids=str)
def test_each_state_is_in_the_state_machine_section(doc: Doc, state: m.ConsultationState) -> None:
    assert f"`{state}`" in doc.section_text("States and transitions")


@pytest.mark.parametrize("refusal", get_args(m.ConsentRefusal))
def test_each_consent_refusal_is_in_the_consent_section(doc: Doc, refusal: str) -> None:
    assert f"`{refusal}`" in doc.section_text("Consent")


def test_the_check_flags_an_action_missing_from_the_document(doc: Doc) -> None:
    """The section check fails for a message the document does not know (so a new action fails it)."""

    class PatientWaved(m.WireModel):
        action: Literal["PATIENT_WAVED"] = "PATIENT_WAVED"
        timestamp: m.UtcTime

    assert problems_with(doc, PatientWaved) == ["no section heading names 'PATIENT_WAVED'"]


def test_the_check_flags_a_field_missing_from_a_section(doc: Doc) -> None:
    class DeviceStatusWithBattery(m.DeviceStatus):
        battery: Literal["ok", "low"]

    assert "`battery`: no field-table row" in problems_with(doc, DeviceStatusWithBattery)


# ---------------------------------------------------------------------------------------------
# Examples: each must be accepted by the code that reads it


@dataclass(frozen=True)
class Example:
    kind: str
    params: dict[str, str]
    payload: Any
    line: int


def examples(doc: Doc) -> list[Example]:
    found: list[Example] = []
    for number, line in enumerate(doc.lines):
        match = re.fullmatch(r"<!-- example (\S+)(.*) -->", line.strip())
        if match is None:
            continue
        kind, rest = match.group(1), match.group(2)
        params: dict[str, str] = dict(re.findall(r"(\S+)=(\S+)", rest))
        if not params and rest.strip():
            params = {"name": rest.strip()}
        assert doc.lines[number + 1].strip() == "```json", f"line {number + 1}: example without a json block"
        end = doc.lines.index("```", number + 2)
        payload = json.loads("\n".join(doc.lines[number + 2 : end]))
        if kind.startswith("channel="):  # "channel=... publisher=..." puts the channel first
            params = {"channel": kind.split("=", 1)[1], **params}
            kind = "message"
        found.append(Example(kind, params, payload, number + 1))
    return found


CLINIC_REQUESTS: dict[str, type[BaseModel]] = {
    "token": clinic_models.TokenRequest,
    "invite": clinic_models.InviteRequest,
    "assign": clinic_models.AssignRequest,
    "revoke-access": clinic_models.RevokeAccessRequest,
    "turn-credentials": clinic_models.TurnCredentialsRequest,
}
CLINIC_ANSWERS: dict[str, type[BaseModel]] = {
    "token": clinic_client.TokenGrant,
    "revoke-access": clinic_client.Revocation,
    "turn-credentials": clinic_client.TurnCredentials,
    "assign": clinic_client.Assignment,
    "audit-events": clinic_client.SinkAcknowledgement,
}


def test_every_message_has_an_example_the_code_decodes(doc: Doc) -> None:
    decoded: set[type[BaseModel]] = set()
    for example in examples(doc):
        if example.kind == "message":
            result = m.decode(example.params["channel"], example.payload, example.params["publisher"])
            assert not isinstance(result, m.Drop), f"line {example.line}: {result}"
            assert tag_of(type(result)) in (example.payload.get("action"), example.payload.get("type"), None)
            decoded.add(type(result))
            if isinstance(result, m.AuditEvent):  # the audit sink reads it too
                clinic_models.AuditEvent.model_validate(example.payload)
        elif example.kind == "consent":
            consent = m.decode_consent(json.dumps(example.payload))
            assert isinstance(consent, m.Consent), f"line {example.line}: {consent}"
            decoded.add(m.Consent)
    missing = {_model_id(model) for model in message_models()} - {_model_id(model) for model in decoded}
    assert missing == set()


def test_every_other_example_is_what_the_code_sends_or_accepts(doc: Doc) -> None:
    kinds: set[str] = set()
    for example in examples(doc):
        kinds.add(example.kind)
        if example.kind == "push-meta":
            severity = cast(m.EmergencySeverity, example.params["severity"])
            expected = m.emergency_push_meta(severity, example.params["escalationId"])
            assert example.payload == expected, f"line {example.line}"
        elif example.kind == "clinic-request":
            CLINIC_REQUESTS[example.params["name"]].model_validate(example.payload)
        elif example.kind == "clinic-answer":
            CLINIC_ANSWERS[example.params["name"]].model_validate(example.payload)
        else:
            assert example.kind in ("message", "consent"), f"line {example.line}: unknown example kind"
    assert kinds == {"message", "consent", "push-meta", "clinic-request", "clinic-answer"}
