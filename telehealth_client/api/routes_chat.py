"""The consultation's chat: the messages with their text, send, mark read.

On a kiosk the chat is the current consultation's (``/v1/chat``); on a provider's cart it is named
in the path (``/v1/consultations/{id}/chat``). Marking read sends a ``chat-read`` receipt, which the
chat audits (``PHI_MESSAGE_READ``, the agent's own user as actor). Listing the messages returns
their text to the local UI and is not audited yet: the protocol's ``PHI_MESSAGE_READ`` means a
receipt sent, and the sink takes only events whose actor is the device's own identity (noted in
issue 23 for the API's own PHI-access event).
"""

from __future__ import annotations

from telehealth_client.api.errors import ApiError
from telehealth_client.api.models import (
    ChatAnswer,
    ChatReadAnswer,
    ChatReadRequest,
    ChatSendRequest,
    ChatSentAnswer,
)
from telehealth_client.api.routing import PATIENT, PROVIDER, Call, Route
from telehealth_client.api.views import chat_entry_view
from telehealth_client.consultation.chat import ConsultationChat


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
    raise ApiError(409, "not-started", "the endpoint is not running", state="none")


async def messages(call: Call) -> ChatAnswer:
    chat = chat_of(call)
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
    errors = (404,) if "{" in path else ()
    return [
        Route(
            "GET", path, messages, f"The chat of {where}, with the text (PHI)", "chat",
            roles=roles, answer=ChatAnswer, conflicts=True, errors=errors,
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
