"""The consultation's chat: the messages with their text, send, mark read.

On a kiosk the chat is the current consultation's (``/v1/chat``); on a provider's cart it is named
in the path (``/v1/consultations/{id}/chat``). Marking read sends a ``chat-read`` receipt, which the
chat audits (``PHI_MESSAGE_READ``, action ``read``). Listing the messages serves their text, a read
of PHI: it is recorded in the audit trail before the answer (``PHI_MESSAGE_READ``, action ``list``,
resource ``chat-transcript``, ``via: local-api``, the agent's own user as actor, as the previews and
snapshots are), and a trail that cannot record it refuses the list (503 ``audit-unavailable``).
"""

from __future__ import annotations

from telehealth_client.api.audited import audit_or_503
from telehealth_client.api.errors import ApiError
from telehealth_client.api.models import (
    ChatAnswer,
    ChatReadAnswer,
    ChatReadRequest,
    ChatSendRequest,
    ChatSentAnswer,
)
from telehealth_client.api.routing import PATIENT, PROVIDER, Call, Route, not_up
from telehealth_client.api.views import chat_entry_view
from telehealth_client.consultation.chat import ConsultationChat

# Where the transcript was read, in its audit event's metadata.
VIA = "local-api"


def chat_of(call: Call) -> ConsultationChat:
    agent = call.agent
    if agent.patient is not None:
        chat = agent.patient.chat
        if chat is None:
            state = agent.patient.state
            raise ApiError(
                409,
                "no-consultation",
                "no consultation is under way on this kiosk: check a patient in first",
                state="idle" if state is None else str(state),
            )
        return chat
    if agent.provider is not None:
        return agent.provider.chat(call.param("consultation_id"))
    raise not_up(agent, "the endpoint")


async def _audit_listing(call: Call, consultation_id: str) -> None:
    """Record that the API's user reads the transcript; 503 if the trail cannot (not served then)."""
    await audit_or_503(call, "chat list", lambda auditor: auditor.transcript_listed(consultation_id, VIA))


async def messages(call: Call) -> ChatAnswer:
    chat = chat_of(call)
    await _audit_listing(call, chat.consultation_id)
    return ChatAnswer(
        consultation_id=chat.consultation_id, messages=[chat_entry_view(chat, e) for e in chat.entries]
    )


async def send(call: Call) -> ChatSentAnswer:
    chat = chat_of(call)
    body: ChatSendRequest = call.body
    entry = await chat.send(body.text)
    return ChatSentAnswer(message=chat_entry_view(chat, entry))


async def mark_read(call: Call) -> ChatReadAnswer:
    chat = chat_of(call)
    body: ChatReadRequest = call.body
    if body.up_to_id is not None and chat.get(body.up_to_id) is None:
        raise ApiError(422, "invalid-body", "no such message", [("upToId", "names no message of this chat")])
    return ChatReadAnswer(receipt_id=await chat.mark_read(body.up_to_id))


def _routes(path: str, roles: frozenset[str], where: str) -> list[Route]:
    # A provider's consultation: 404 when it holds no such one, 503 while its endpoint starts.
    errors: tuple[int, ...] = (404, 503) if "{" in path else ()
    return [
        Route(
            "GET", path, messages,
            f"The chat of {where}, with the text (PHI: each list is audited, PHI_MESSAGE_READ)", "chat",
            roles=roles, answer=ChatAnswer, conflicts=True, errors=tuple(sorted({*errors, 503})),
        ),
        Route(
            "POST", path, send, f"Send a chat message in {where} (durable once answered)", "chat",
            roles=roles, body=ChatSendRequest, answer=ChatSentAnswer, status=201,
            conflicts=True, errors=errors,
        ),
        Route(
            "POST", f"{path}/read", mark_read, f"Mark the chat of {where} read (a chat-read receipt)",
            "chat",
            roles=roles, body=ChatReadRequest, answer=ChatReadAnswer, conflicts=True, errors=errors,
        ),
    ]  # fmt: skip


ROUTES = [
    *_routes("/v1/chat", PATIENT, "the current consultation"),
    *_routes("/v1/consultations/{consultation_id}/chat", PROVIDER, "the consultation"),
]
