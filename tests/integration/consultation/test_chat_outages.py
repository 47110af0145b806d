"""Chat through outages and kills, on the real relay and clinic stand-in: what was sent while the
relay was unreachable arrives once, in order, when it returns; what a patient agent process queued
before a SIGKILL is sent by the restarted process once; and a publish that landed just before the
kill is found in history, not published again."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from telehealth_client import events
from telehealth_client.durability import OUTBOX_FILE
from telehealth_client.protocol.messages import ConsultationState as S
from telehealth_client.pubsub.bus import ConnectionStatus
from telehealth_client.pubsub.crypto import RotatingCryptoModule
from telehealth_devstack.network import CuttableLink
from telehealth_devstack.stack import DevStack
from tests.support.agent_child import AgentChild, Launch
from tests.support.consultation import (
    AGENT_CHECK_IN,
    CHECK_IN,
    CONSULTATION,
    PATIENT,
    PROVIDER,
    Parts,
    RecordingHub,
    added,
    check_in_and_join,
    sent,
)
from tests.support.logs import LogLines
from tests.support.tap import Tap

pytestmark = pytest.mark.integration


def added_ids(hub: RecordingHub, sender: str) -> list[str]:
    """The ids of the messages from ``sender`` that appeared in this side's chat, in order."""
    return [
        e.message_id for e in hub.items if isinstance(e, events.ChatMessageAdded) and e.sender_id == sender
    ]


def reconnecting(e: Any) -> bool:
    return isinstance(e, events.BusStatusChanged) and e.status is ConnectionStatus.RECONNECTING


def stored_chat_ids(stack: DevStack) -> list[str]:
    """The ids of the chat messages the relay stored on the consultation, decrypted, in order."""
    crypto = RotatingCryptoModule(stack.keys.cipher_key)
    found = []
    for stored in stack.relay.stored_messages(CONSULTATION):
        message = crypto.decrypt(stored.payload)
        if message.get("type") == "chat":
            found.append(message["id"])
    return found


def status_is(event: str, message_id: str, status: str) -> Callable[[dict[str, Any]], bool]:
    """An agent process's line for one chat message: ``chat-message`` or ``chat-status``."""
    return lambda line: (
        line.get("event") == event and line["message_id"] == message_id and line["status"] == status
    )


def bus_reconnecting(line: dict[str, Any]) -> bool:
    return line.get("event") == "bus-status" and line["status"] == "reconnecting"


def outbox_ids(state_dir: Path) -> list[str]:
    """The ids waiting in an agent's outbox file (ids are stored in clear; the rest is sealed)."""
    with closing(sqlite3.connect(f"file:{state_dir / OUTBOX_FILE}?mode=ro", uri=True)) as db:
        return [row[0] for row in db.execute("SELECT id FROM pending ORDER BY seq")]


async def test_chat_sent_while_the_relay_is_unreachable_arrives_once_in_order_both_ways(
    parts: Parts, log_lines: LogLines
) -> None:
    patient_hub, provider_hub = RecordingHub(), RecordingHub()
    relay = parts.stack.relay.origin
    async with CuttableLink(relay) as patient_link, CuttableLink(relay) as provider_link:
        built = await parts.durable_pair(
            patient_hub,
            provider_hub,
            patient={"origin": patient_link.origin},
            provider={"origin": provider_link.origin},
        )
        patient, provider = built.patient, built.provider
        await check_in_and_join(patient, provider, patient_hub, provider_hub)
        patient_chat, provider_chat = patient.chat, provider.chat(CONSULTATION)
        assert patient_chat is not None

        # The relay is unreachable from both sides: each writes while it is away.
        patient_link.cut()
        provider_link.cut()
        await patient_hub.wait_for(reconnecting)
        await provider_hub.wait_for(reconnecting)
        questions = [await patient_chat.send(f"question {n}") for n in range(3)]
        answers = [await provider_chat.send(f"answer {n}") for n in range(3)]
        assert {e.status for e in questions + answers} == {"pending"}
        # Each side tried its first message and failed: they wait in the outbox, not in a request.
        for entry in (questions[0], answers[0]):
            await log_lines.wait_line("outbox publish failed", f"id={entry.id}", "will_retry=yes")
        assert stored_chat_ids(parts.stack) == []
        assert [e.status for e in patient_chat.entries] == ["pending"] * 3

        patient_link.restore()
        provider_link.restore()
        for entry in questions:
            await patient_hub.wait_for(sent(entry.id))
        for entry in answers:
            await provider_hub.wait_for(sent(entry.id))
        await provider_hub.wait_for(added(PATIENT), count=3)
        await patient_hub.wait_for(added(PROVIDER), count=3)

        # A message after the outage: anything sent twice would have reached the channel before it.
        last = await patient_chat.send("anything else?")
        await provider_hub.wait_for(added(PATIENT), count=4)
        await patient_hub.wait_for(sent(last.id))

    patient_view = [(e.id, e.text, e.status) for e in patient_chat.entries]
    provider_view = [(e.id, e.text, e.status) for e in provider_chat.entries]
    assert patient_view == provider_view  # one order, PubNub's, on both sides
    assert {status for _, _, status in patient_view} == {"sent"}
    shown = [message_id for message_id, _, _ in patient_view]
    assert len(shown) == len(set(shown)) == 7
    # Each sender's messages in the order written, the last one last.
    assert [i for i in shown if i in {e.id for e in questions}] == [e.id for e in questions]
    assert [i for i in shown if i in {e.id for e in answers}] == [e.id for e in answers]
    assert shown[-1] == last.id
    timetokens = [e.timetoken or 0 for e in patient_chat.entries]
    assert timetokens == sorted(timetokens) and 0 not in timetokens
    # Shown once at each far end, and published once: the relay stored each id once.
    provider_added = added_ids(provider_hub, PATIENT)
    patient_added = added_ids(patient_hub, PROVIDER)
    assert provider_added == [e.id for e in [*questions, last]]
    assert patient_added == [e.id for e in answers]
    assert sorted(stored_chat_ids(parts.stack)) == sorted(shown)


# -- a patient agent process, SIGKILLed with chat in its outbox -------------------------------------


class HeldChatPublish(Tap):
    """A real HTTP hop to the relay that, once armed, lets the next publish on one channel reach the
    relay (stored and delivered) and never answers it, as a process killed right after its publish
    landed never learns the outcome. Everything else is forwarded and answered as the relay answered.
    """

    def __init__(self, stack: DevStack, channel: str) -> None:
        super().__init__(stack.relay)
        self._channel = channel
        self._armed = False
        self.held = asyncio.Event()
        self._never = asyncio.Event()

    def arm(self) -> None:
        self._armed = True

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        answer = await super()._forward(request)
        segments = request.path.split("/")  # /publish/{pub}/{sub}/0/{channel}/0[/{message}]
        if not (self._armed and request.path.startswith("/publish/") and segments[5] == self._channel):
            return answer
        self._armed = False
        self.held.set()
        await self._never.wait()  # cancelled when the client's connection goes
        raise AssertionError("unreachable")


async def checked_in_and_joined(parts: Parts, agent: AgentChild, provider_hub: RecordingHub) -> Any:
    """The provider (in this process, with its own outbox) and the agent's patient, joined."""
    provider = await parts.provider(provider_hub, durable=await parts.durable("provider-state", PROVIDER))
    reply = await agent.command("check-in", **AGENT_CHECK_IN)
    assert reply["ok"], reply
    await provider_hub.wait_state(S.CHECKED_IN)
    await provider.join(CONSULTATION)
    await agent.wait_state(S.CONNECTING)
    return provider


async def each_sent_once_after(
    agent: AgentChild,
    queued_id: str,
    text: str,
    provider: Any,
    provider_hub: RecordingHub,
    stack: DevStack,
) -> None:
    """The patient ``agent`` sends ``text`` after the chat ``queued_id`` it was restarted with: both
    are sent, each once and in that order, in its log, the provider's chat and the channel's history."""
    after = await agent.command("chat", text=text)
    await provider_hub.wait_for(added(PATIENT), count=2)
    # The far end may show it before the publish's answer reached the sender: wait for that too.
    await agent.wait_line(status_is("chat-status", after["id"], "sent"))
    log = await agent.command("chat-log")
    assert [(e["id"], e["status"]) for e in log["entries"]] == [(queued_id, "sent"), (after["id"], "sent")]
    assert [e.id for e in provider.chat(CONSULTATION).entries] == [queued_id, after["id"]]
    assert added_ids(provider_hub, PATIENT) == [queued_id, after["id"]]
    assert stored_chat_ids(stack) == [queued_id, after["id"]]


async def test_chat_queued_before_a_sigkill_is_sent_once_by_the_restarted_agent(
    parts: Parts, launch: Launch, tmp_path: Path
) -> None:
    provider_hub = RecordingHub()
    await parts.record_consent()
    async with CuttableLink(parts.stack.relay.origin) as link:
        first: AgentChild = await launch(link.origin, "first.log")
        provider = await checked_in_and_joined(parts, first, provider_hub)

        link.cut()
        await first.wait_line(bus_reconnecting)
        queued = await first.command("chat", text="my chest hurts when I breathe")
        assert (queued["ok"], queued["status"]) == (True, "pending"), queued
        log = await first.command("chat-log")
        assert [(e["id"], e["status"]) for e in log["entries"]] == [(queued["id"], "pending")]
        await first.kill()
    assert outbox_ids(tmp_path / "kiosk-state") == [queued["id"]]  # on disk, sealed, through the kill
    assert stored_chat_ids(parts.stack) == []

    second = await launch(parts.stack.relay.origin, "second.log")
    [shown] = await provider_hub.wait_for(added(PATIENT))
    assert shown.message_id == queued["id"]
    await second.wait_line(status_is("chat-status", queued["id"], "sent"))
    # A message after it: had the queued one been sent twice, the copy would have come first.
    await each_sent_once_after(second, queued["id"], "and I feel dizzy", provider, provider_hub, parts.stack)
    await second.stop()
    restarted_log = (tmp_path / "second.log").read_text()
    assert "chest hurts" not in restarted_log and "dizzy" not in restarted_log  # no chat text in logs


async def test_a_chat_publish_that_landed_just_before_the_sigkill_is_not_sent_again(
    parts: Parts, launch: Launch, tmp_path: Path
) -> None:
    provider_hub = RecordingHub()
    await parts.record_consent()
    async with HeldChatPublish(parts.stack, CONSULTATION) as hop:
        first: AgentChild = await launch(hop.origin, "first.log")
        provider = await checked_in_and_joined(parts, first, provider_hub)

        hop.arm()
        queued = await first.command("chat", text="I took two aspirin")
        assert queued["ok"], queued
        await asyncio.wait_for(hop.held.wait(), 15)  # stored by the relay; the agent has no answer
        await first.kill()
    assert outbox_ids(tmp_path / "kiosk-state") == [queued["id"]]  # its outcome was unknown at the kill
    assert stored_chat_ids(parts.stack) == [queued["id"]]

    second = await launch(parts.stack.relay.origin, "second.log")
    await second.wait_line(status_is("chat-status", queued["id"], "sent"))
    # Found in history, not sent again:
    await each_sent_once_after(
        second, queued["id"], "is that all right?", provider, provider_hub, parts.stack
    )
    await second.stop()
    restarted_log = (tmp_path / "second.log").read_text()
    assert f"outbox item found already sent id={queued['id']}" in restarted_log
    assert "aspirin" not in restarted_log


async def test_chat_a_provider_agent_queued_before_a_sigkill_reaches_the_patient_once_after_restart(
    parts: Parts, launch: Launch, tmp_path: Path
) -> None:
    patient_hub = RecordingHub()
    await parts.record_consent()
    async with CuttableLink(parts.stack.relay.origin) as link:
        first: AgentChild = await launch(link.origin, "first.log", provider=True)
        patient = parts.patient(patient_hub, durable=await parts.durable("kiosk-state"))
        await patient.check_in(**CHECK_IN)
        await first.wait_state(S.CHECKED_IN)
        assert (await first.command("join", consultationId=CONSULTATION))["ok"]
        await patient_hub.wait_state(S.CONNECTING)
        chat = patient.chat
        assert chat is not None
        question = await chat.send("can I drive home?")
        await first.wait_line(status_is("chat-message", question.id, "sent"))
        read = await first.command("read", consultationId=CONSULTATION)
        await patient_hub.wait_for(
            lambda e: isinstance(e, events.ChatReadUpdated) and e.reader_id == PROVIDER
        )
        assert chat.read_by(question.id) == {PROVIDER} and read["receipt"] is not None

        link.cut()
        await first.wait_line(bus_reconnecting)
        queued = await first.command("chat", consultationId=CONSULTATION, text="better not today")
        assert (queued["ok"], queued["status"]) == (True, "pending"), queued
        await first.kill()
    assert outbox_ids(tmp_path / "provider-state") == [queued["id"]]

    second = await launch(parts.stack.relay.origin, "second.log", provider=True)
    await patient_hub.wait_for(added(PROVIDER))
    await second.wait_line(status_is("chat-status", queued["id"], "sent"))
    after = await second.command("chat", consultationId=CONSULTATION, text="someone should pick you up")
    await patient_hub.wait_for(added(PROVIDER), count=2)
    # The far end may show it before the publish's answer reached the sender: wait for that too.
    await second.wait_line(status_is("chat-status", after["id"], "sent"))
    assert added_ids(patient_hub, PROVIDER) == [queued["id"], after["id"]]
    assert [e.id for e in chat.entries] == [question.id, queued["id"], after["id"]]
    log = await second.command("chat-log", consultationId=CONSULTATION)
    assert [(e["id"], e["senderId"], e["status"]) for e in log["entries"]] == [
        (question.id, PATIENT, "sent"),
        (queued["id"], PROVIDER, "sent"),
        (after["id"], PROVIDER, "sent"),
    ]
    assert stored_chat_ids(parts.stack) == [question.id, queued["id"], after["id"]]
