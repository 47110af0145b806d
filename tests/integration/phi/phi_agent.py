"""A real Agent in its own process for the PHI canary: the commands of
``tests/integration/consultation/agent_process.py`` plus chat and emergency ones, with every log
record at DEBUG written to stderr in the production key=value format (stdout carries the JSON
lines of events and replies), so a test can search all the process wrote.

Extra commands: ``{"cmd": "chat", "text", "consultationId"?}`` (answered with the message ``id``),
``{"cmd": "read", "consultationId"?}``, ``{"cmd": "escalate", "consultationId", "severity",
"reason"}`` (answered with the escalation ``id``), ``{"cmd": "resolve", "id", "resolution"}``,
``{"cmd": "drained"}`` (``outbox`` and ``audit``: everything queued was sent, every audit
event acknowledged). A failed command is answered with the exception's type and place only.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from typing import Any

from telehealth_client import logs
from telehealth_client.agent import Agent
from telehealth_client.config import load_settings
from telehealth_client.consultation.chat import ConsultationChat
from telehealth_client.logs import describe_exception

from ..consultation.agent_process import command as consultation_command
from ..consultation.agent_process import emit, forward

WAIT = 15.0


def chat_of(agent: Agent, request: dict[str, Any]) -> ConsultationChat:
    if agent.provider is not None:
        return agent.provider.chat(request["consultationId"])
    assert agent.patient is not None and agent.patient.chat is not None
    return agent.patient.chat


async def command(agent: Agent, request: dict[str, Any]) -> dict[str, Any]:
    cmd = request.get("cmd")
    if cmd == "chat":
        entry = await chat_of(agent, request).send(request["text"])
        return {"id": entry.id}
    if cmd == "read":
        return {"id": await chat_of(agent, request).mark_read()}
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
    return await consultation_command(agent, request)


async def main() -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logs.KeyValueFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG)
    logs.quiet_url_loggers()  # as logs.configure does in production
    agent = Agent(load_settings())
    forwarder = asyncio.create_task(forward(agent))
    try:
        emit({"event": "started", "status": await agent.start()})
        while line := await asyncio.to_thread(sys.stdin.readline):
            request = json.loads(line)
            try:
                emit({"reply": request.get("cmd"), "ok": True, **await command(agent, request)})
            except Exception as exc:
                emit({"reply": request.get("cmd"), "ok": False, "error": describe_exception(exc)})
    finally:
        await agent.aclose()
        forwarder.cancel()
        await asyncio.gather(forwarder, return_exceptions=True)


if __name__ == "__main__":
    asyncio.run(main())
