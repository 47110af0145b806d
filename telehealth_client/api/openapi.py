"""The OpenAPI 3.1 document, generated from the route table and the pydantic models (never
written by hand): each route's path, parameters, request body, answers and whether it needs the
bearer token.

``OpenApiDocument(routes).document``: made on its first request, not when the API is built: the
models' JSON schemas take a noticeable part of a start that must say READY within a second.
"""

from __future__ import annotations

import functools
from typing import Any, Literal

from aiohttp import web
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from telehealth_client import __version__
from telehealth_client.api.models import ErrorAnswer
from telehealth_client.api.routing import Route

REF = "#/components/schemas/{model}"
Mode = Literal["validation", "serialization"]

_ERRORS = {
    400: "the body could not be read as sent (a bad chunk, a Content-Encoding it is not in)",
    401: "the bearer token is missing or wrong",
    404: "no such route, consultation or escalation",
    405: "method not allowed",
    409: "the lifecycle (or this agent's role) refuses it now: `state` is the consultation's",
    413: "the body is too large",
    415: "the body is not application/json",
    422: "the body is invalid: `fields` names each failing field",
    500: "failed inside the agent",
    503: "the clinic backend, PubNub or the audit trail did not answer, or the endpoint is still starting"
    " (`starting`: the message says what it waits for)",
}


def _schemas(routes: list[Route]) -> tuple[dict[Any, Any], dict[str, Any]]:
    models: list[tuple[type[BaseModel], Mode]] = [(ErrorAnswer, "serialization")]
    for route in routes:
        if route.body is not None:
            models.append((route.body, "validation"))
        if route.answer is not None:
            models.append((route.answer, "serialization"))
    unique = list(dict.fromkeys(models))
    refs, document = models_json_schema(unique, ref_template=REF)
    return refs, document.get("$defs", {})


def openapi_document(routes: list[Route]) -> dict[str, Any]:
    refs, schemas = _schemas(routes)
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        operation: dict[str, Any] = {
            "operationId": route.operation_id,
            "summary": route.summary,
            "tags": [route.tag],
            "description": f"For {', '.join(sorted(route.roles))} agents.",
        }
        if route.public:
            operation["security"] = []
        if route.path_params:
            operation["parameters"] = [
                {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
                for name in route.path_params
            ]
        if route.stream:
            operation.setdefault("parameters", []).append(
                {"name": "Last-Event-ID", "in": "header", "required": False, "schema": {"type": "string"}}
            )
        if route.body is not None:
            operation["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": refs[(route.body, "validation")]}},
            }
        responses: dict[str, Any] = {}
        if route.media_type is not None and route.media_type.startswith("multipart/"):
            responses[str(route.status)] = {
                "description": route.summary,
                "content": {route.media_type: {"schema": {"type": "string"}}},
            }
        elif route.stream:
            responses[str(route.status)] = {
                "description": "Server-Sent Events: `id`, `event` (the event's kind), `data` (JSON)",
                "content": {"text/event-stream": {"schema": {"type": "string"}}},
            }
        elif route.media_type is not None:
            binary = not route.media_type.startswith("text/")
            responses[str(route.status)] = {
                "description": "done",
                "content": {
                    route.media_type: {
                        "schema": {"type": "string", **({"format": "binary"} if binary else {})}
                    }
                },
            }
        elif route.answer is not None:
            responses[str(route.status)] = {
                "description": "done",
                "content": {"application/json": {"schema": refs[(route.answer, "serialization")]}},
            }
        else:
            responses[str(route.status)] = {
                "description": "done",
                "content": {"application/json": {"schema": {"type": "object"}}},
            }
        codes = {500, *route.errors}
        if not route.public:
            codes.add(401)
        if route.body is not None:
            codes |= {400, 413, 415, 422}
        if route.conflicts or route.roles != frozenset({"patient", "provider", "nurse"}):
            codes.add(409)
        error = {"application/json": {"schema": refs[(ErrorAnswer, "serialization")]}}
        for code in sorted(codes):
            responses[str(code)] = {"description": _ERRORS[code], "content": error}
        operation["responses"] = responses
        paths.setdefault(route.path, {})[route.method.lower()] = operation
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "telehealth-agent local API",
            "version": __version__,
            "description": "The agent's local HTTP API (loopback or a unix socket). Every route but "
            "GET /v1/health needs `Authorization: Bearer <api_token>`. Errors are JSON: "
            '`{"error": code, "message": text, "fields": [{"field", "reason"}], "state"?, "role"?}`.',
        },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
    }


class OpenApiDocument:
    """The document of one route table, made once, when it is first asked for."""

    def __init__(self, routes: list[Route]) -> None:
        self._routes = routes

    @functools.cached_property
    def document(self) -> dict[str, Any]:
        return openapi_document(self._routes)


OPENAPI_KEY = web.AppKey("openapi", OpenApiDocument)
