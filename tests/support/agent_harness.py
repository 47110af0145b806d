"""A real Agent in its own process (the child side of ``tests.support.agent_child.AgentChild``):
settings from ``TELEHEALTH_*``, JSON-line commands on stdin, JSON-line events and replies on stdout,
logs on stderr (``--debug``: every record at DEBUG in the production key=value format, so a test
can search all the process wrote; otherwise INFO).

Patient agent commands: ``{"cmd": "check-in", "appointmentId", "patientId", "providerId",
"departmentId"}``, ``{"cmd": "leave"}``, ``{"cmd": "devices", "camera", "microphone", "speaker",
"network"}``, ``{"cmd": "status"}``. Provider agent commands: ``{"cmd": "queue-updates"}``, ``{"cmd":
"join" | "start" | "call" | "wrap-up", "consultationId"}``, ``{"cmd": "end", "consultationId",
"followUpRequired"}``, ``{"cmd": "status"}``. Chat, for both (a provider names the
``consultationId``): ``{"cmd": "chat", "text"}`` -> ``id``, ``status``; ``{"cmd": "read", "upToId"?}``
-> ``receipt`` (None when nothing newer was read); ``{"cmd": "chat-log"}`` -> ``entries`` (``id``,
``senderId``, ``senderRole``, ``text``, ``status``, ``timetoken``, ``readBy``). Emergencies:
``{"cmd": "escalate", "consultationId", "severity", "reason"}`` and ``{"cmd": "resolve", "id",
"resolution"}`` -> the escalation's ``id``. ``{"cmd": "drained"}`` -> ``outbox`` and ``audit``:
everything queued was sent, every audit event acknowledged. ``{"cmd": "block", "seconds"}`` blocks
the event loop itself for that long (a hung loop, for the systemd watchdog's test).

Each is answered with ``{"reply": cmd, "ok": bool, ...}``; a failed one with the exception's type
(``error``), its ``code`` or ``field`` and its place (``where``), never its message. Every hub event
is printed as ``{"event": kind, ...}``; ``{"event": "started", "status": ...}`` once started.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import sys
import time
from typing import Any

from telehealth_client import logs
from telehealth_client.agent import Agent
from telehealth_client.config import load_settings
from telehealth_client.consultation.chat import ConsultationChat
from telehealth_client.consultation.patient import DeviceReport
from telehealth_client.consultation.provider import ProviderEndpoint
from telehealth_client.events import Event

WAIT = 15.0


def emit(line: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(line, default=str) + "\n")
    sys.stdout.flush()


def describe(event: Event) -> dict[str, Any]:
    fields = {f.name: getattr(event, f.name) for f in dataclasses.fields(event)}
    return {"event": event.kind, **fields}


async def forward(agent: Agent) -> None:
    async with agent.hub.subscribe(max_pending=10_000) as stream:
        async for event in stream:
            emit(describe(event))


CHAT_COMMANDS = ("chat", "read", "chat-log")


async def chat_command(chat: ConsultationChat, request: dict[str, Any]) -> dict[str, Any]:
    cmd = request["cmd"]
    if cmd == "chat":
        entry = await chat.send(request["text"])
        return {"id": entry.id, "status": entry.status}
    if cmd == "read":
        return {"receipt": await chat.mark_read(request.get("upToId"))}
    return {
        "entries": [
            {
                "id": e.id,
                "senderId": e.sender_id,
                "senderRole": e.sender_role,
                "text": e.text,
                "status": e.status,
                "timetoken": e.timetoken,
                "readBy": sorted(chat.read_by(e.id)),
            }
            for e in chat.entries
        ]
    }


async def command(agent: Agent, request: dict[str, Any]) -> dict[str, Any]:
    cmd = request.get("cmd")
    if cmd == "block":
        # On the loop on purpose: nothing else runs meanwhile (a hung loop).
        time.sleep(float(request["seconds"]))  # noqa: ASYNC251
        return {}
    if cmd in ("escalate", "resolve"):
        desk = agent.emergency
        assert desk is not None
        if cmd == "escalate":
            escalation = await desk.escalate(
                request["consultationId"], request["severity"], request["reason"]
            )
        else:
            escalation = await desk.resolve(request["id"], request["resolution"])
        return {"id": escalation.id}
    if cmd == "drained":
        assert agent.durable is not None
        return {
            "outbox": await agent.durable.outbox.wait_drained(WAIT),
            "audit": await agent.durable.trail.wait_delivered(WAIT),
        }
    if agent.provider is not None:
        return await provider_command(agent.provider, request)
    patient = agent.patient
    assert patient is not None
    if cmd in CHAT_COMMANDS:
        chat = patient.chat
        if chat is None:
            raise ValueError("chat: no consultation is under way")
        return await chat_command(chat, request)
    if cmd == "check-in":
        await patient.check_in(
            appointment_id=request["appointmentId"],
            patient_id=request["patientId"],
            provider_id=request["providerId"],
            department_id=request["departmentId"],
        )
    elif cmd == "leave":
        await patient.leave()
    elif cmd == "devices":
        fields = ("camera", "microphone", "speaker", "network")
        await patient.report_devices(DeviceReport(**{name: request[name] for name in fields}))
    elif cmd != "status":
        raise ValueError(f"cmd: unknown command {cmd!r}")
    session = patient.session
    consultation = session.consultation if session is not None else None
    return {
        "state": None if consultation is None else str(consultation.state),
        "queuePosition": None if consultation is None else consultation.queue_position,
        "lastTimetoken": None if consultation is None else consultation.last_timetoken,
        "idle": patient.idle,
    }


async def provider_command(provider: ProviderEndpoint, request: dict[str, Any]) -> dict[str, Any]:
    cmd = request.get("cmd")
    cid = request.get("consultationId", "")
    if cmd in CHAT_COMMANDS:
        return await chat_command(provider.chat(cid), request)
    if cmd == "queue-updates":
        await provider.send_queue_updates()
    elif cmd == "join":
        await provider.join(cid)
    elif cmd == "start":
        await provider.start_consultation(cid)
    elif cmd == "call":
        await provider.call(cid)
    elif cmd == "wrap-up":
        await provider.wrap_up(cid)
    elif cmd == "end":
        summary = await provider.end(cid, follow_up_required=request["followUpRequired"])
        return {"duration": summary.duration, "followUpRequired": summary.follow_up_required}
    elif cmd != "status":
        raise ValueError(f"cmd: unknown command {cmd!r}")
    return {
        "consultations": {
            cid: {"state": str(s.consultation.state), "lastTimetoken": s.consultation.last_timetoken}
            for cid, s in provider.sessions.items()
        },
        "queue": [w.consultation_id for w in provider.queue],
    }


def configure_logs(debug: bool) -> None:
    if not debug:
        logging.basicConfig(stream=sys.stderr, level=logging.INFO)
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logs.KeyValueFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG)
    logs.quiet_url_loggers()  # as logs.configure does in production


async def main(debug: bool) -> None:
    configure_logs(debug)
    agent = Agent(load_settings())
    forwarder = asyncio.create_task(forward(agent))
    try:
        emit({"event": "started", "status": await agent.start()})
        while line := await asyncio.to_thread(sys.stdin.readline):
            request = json.loads(line)
            try:
                emit({"reply": request.get("cmd"), "ok": True, **await command(agent, request)})
            except Exception as exc:
                emit(
                    {
                        "reply": request.get("cmd"),
                        "ok": False,
                        "error": type(exc).__name__,
                        "code": getattr(exc, "code", None) or getattr(exc, "field", None),
                        "where": logs.describe_exception(exc),
                    }
                )
    finally:
        await agent.aclose()
        forwarder.cancel()
        await asyncio.gather(forwarder, return_exceptions=True)


if __name__ == "__main__":
    asyncio.run(main("--debug" in sys.argv[1:]))
