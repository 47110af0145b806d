"""The route table: each route's method, path, roles, request and answer models, and its handler.

The aiohttp router, the role checks, the body validation and the OpenAPI document are all made
from this one table. A handler takes a ``Call`` (the agent, the request, the validated body) and
returns an answer model (written as JSON) or a response it made itself (the event stream).

The product's refusals become JSON answers here: a lifecycle refusal (``TransitionError``,
``SessionError``) is 409 with the consultation's ``state`` (an unknown consultation 404), a bad ID
or chat text 422 naming the field, the clinic's refusal 422 naming its field (``clinic_answers``),
the clinic or PubNub not answering 503.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiohttp import web
from pydantic import BaseModel

from telehealth_client.api.clinic_answers import clinic_answer
from telehealth_client.api.errors import ApiError
from telehealth_client.api.models import RequestModel, dump
from telehealth_client.api.request_body import read_body
from telehealth_client.api.stream_slots import StreamSlots
from telehealth_client.consultation.chat import ChatError
from telehealth_client.consultation.lifecycle import TransitionError
from telehealth_client.consultation.patient import CheckInRefused
from telehealth_client.consultation.session import SessionError
from telehealth_client.emergency.desk import EmergencyError
from telehealth_client.protocol.channels import InvalidIdError
from telehealth_client.pubsub.bus import BusError
from telehealth_client.security.clinic_client import ClinicError

if TYPE_CHECKING:
    from telehealth_client.api.agent_view import AgentView
    from telehealth_client.api.device_checks import DeviceChecks
    from telehealth_client.api.events_stream import EventRing
    from telehealth_client.api.metrics import AgentMetrics

PATIENT = frozenset({"patient"})
PROVIDER = frozenset({"provider"})
STAFF = frozenset({"provider", "nurse"})
# The agents that hold calls, and so devices and a media path to check.
CALLERS = frozenset({"patient", "provider"})
EVERY_ROLE = frozenset({"patient", "provider", "nurse"})

AGENT_KEY = web.AppKey("agent", object)
RING_KEY = web.AppKey("ring", object)
STATE_KEY = web.AppKey("api_state", object)


@dataclass
class ApiState:
    """What the API keeps between requests: the calls it started (to end them), whether it stops,
    its device checks, its metrics and the event and preview streams it serves (each capped)."""

    calls: dict[str, Any] = field(default_factory=dict)
    closing: bool = False
    checks: DeviceChecks | None = None
    metrics: AgentMetrics | None = None
    event_streams: StreamSlots = field(default_factory=lambda: StreamSlots("event"))
    preview_streams: StreamSlots = field(default_factory=lambda: StreamSlots("preview"))


@dataclass
class Call:
    agent: AgentView
    request: web.Request
    body: Any
    ring: EventRing
    state: ApiState

    def param(self, name: str) -> str:
        return self.request.match_info[name]


Handler = Callable[[Call], Awaitable[BaseModel | web.StreamResponse]]


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    handler: Handler
    summary: str
    tag: str
    roles: frozenset[str] = EVERY_ROLE
    body: type[RequestModel] | None = None
    answer: type[BaseModel] | None = None
    status: int = 200
    public: bool = False  # open without the bearer token (health only)
    conflicts: bool = False  # may answer 409 (the lifecycle refused it)
    stream: bool = False  # text/event-stream
    media_type: str | None = None  # an answer other than JSON (a JPEG or MJPEG stream, Prometheus text)
    errors: tuple[int, ...] = ()  # further documented refusals (404, 503)

    @property
    def operation_id(self) -> str:
        words = re.sub(r"[{}]", "", self.path.removeprefix("/v1/").removeprefix("/")).replace("/", "-")
        return f"{self.method.lower()}-{words}".replace("_", "-")

    @property
    def path_params(self) -> list[str]:
        return re.findall(r"{(\w+)}", self.path)


def current_state(agent: AgentView, consultation_id: str | None) -> str:
    """The consultation's state as a 409 reports it: the patient's current one (``idle`` when
    none), or the provider's consultation named in the path (``none`` when it has no such one)."""
    if agent.patient is not None:
        state = agent.patient.state
        return "idle" if state is None else str(state)
    if agent.provider is not None and consultation_id is not None:
        session = agent.provider.sessions.get(consultation_id)
        return "none" if session is None else str(session.consultation.state)
    return "none"


def not_up(agent: AgentView, what: str) -> ApiError:
    """The refusal while ``what`` (an endpoint, a desk) is not there: 503 ``starting`` while the
    agent brings it up (the message says what it waits for), else 409 ``not-started``."""
    if agent.starting:
        return ApiError(503, "starting", f"{what} is starting ({agent.status}); try again shortly")
    return ApiError(409, "not-started", f"{what} is not running", state="none")


def role_name(agent: AgentView) -> str:
    return str(agent.settings.role)


def handler_for(route: Route) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def handle(request: web.Request) -> web.StreamResponse:
        agent: AgentView = request.app[AGENT_KEY]  # type: ignore[assignment]
        role = role_name(agent)
        consultation_id = request.match_info.get("consultation_id")
        if role not in route.roles:
            raise ApiError(
                409,
                "wrong-role",
                f"this route is for {' and '.join(sorted(route.roles))} agents; this agent is a {role}",
                role=role,
                state=current_state(agent, consultation_id),
            )
        body = await read_body(route.body, request) if route.body is not None else None
        call = Call(agent, request, body, request.app[RING_KEY], request.app[STATE_KEY])  # type: ignore[arg-type]
        try:
            answer = await route.handler(call)
        except (SessionError, TransitionError) as exc:
            status = 404 if exc.code == "unknown-consultation" else 409
            raise ApiError(status, exc.code, exc.text, state=current_state(agent, consultation_id)) from None
        except CheckInRefused as exc:
            raise ApiError(
                409,
                "check-in-refused",
                "the check-in was refused",
                [(exc.field, exc.reason)],
                state=current_state(agent, consultation_id),
            ) from None
        except ChatError as exc:
            if exc.field == "consultation":
                raise ApiError(
                    409, "chat-closed", f"the chat {exc.reason}", state=current_state(agent, consultation_id)
                ) from None
            raise ApiError(
                422, "invalid-body", "the chat refused it", [(_camel(exc.field), exc.reason)]
            ) from None
        except (InvalidIdError, EmergencyError) as exc:
            if isinstance(exc, EmergencyError) and exc.field == "id":
                raise ApiError(404, "unknown-escalation", f"the escalation {exc.reason}") from None
            raise ApiError(422, "invalid-body", "a field was refused", [(exc.field, exc.reason)]) from None
        except ClinicError as exc:
            raise clinic_answer(exc) from None
        except BusError:
            raise ApiError(503, "pubsub-unavailable", "PubNub refused or did not answer; try again") from None
        if isinstance(answer, web.StreamResponse):
            return answer
        return web.json_response(dump(answer), status=route.status)

    return handle


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def add_routes(app: web.Application, routes: list[Route]) -> None:
    for route in routes:
        app.router.add_route(route.method, route.path, handler_for(route))
        if route.public and route.method == "GET":
            # A load balancer's or a monitor's probe may ask HEAD: the same answer, without its body.
            app.router.add_route("HEAD", route.path, handler_for(route))
