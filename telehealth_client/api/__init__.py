"""The local HTTP API: the one front door through which the kiosk's screen, the cart's nurse UI and
technicians drive and watch this agent (aiohttp, on loopback or a unix socket, bearer token).

Modules: ``app`` (the application and ``LocalApi``, its runner), ``auth`` (the bearer token),
``errors`` (JSON error answers), ``models`` (request and answer bodies, pydantic), ``routing`` (the
route table every route, the OpenAPI document and the role checks come from), ``routes_*`` (the
routes, one module per concern), ``events_stream`` (the replay ring and Server-Sent Events),
``openapi`` (the OpenAPI 3.1 document, generated from the route table and the models),
``routes_previews`` (the call's video previews as MJPEG), ``static_pages`` (the technician page at
``/``, files in ``static/``, served without the token).

Public API: ``LocalApi(agent, token, settings)``: ``await start()`` (binds; ``address`` says where),
``await aclose()``; ``build_app(agent, token, ring)``; ``ROUTES``.
"""

from telehealth_client.api.agent_view import AgentView
from telehealth_client.api.app import LocalApi, build_app
from telehealth_client.api.table import ROUTES

__all__ = ["ROUTES", "AgentView", "LocalApi", "build_app"]
