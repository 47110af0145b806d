"""A route's JSON body: read, decoded within bounds and validated against the route's model.

Every refusal names the body: 415 for a body that is not ``application/json``, 400 for one that
cannot be read (a bad chunk, a ``Content-Encoding`` it is not in), 422 for one that is not a JSON
object within bounds (nested deeper than ``MAX_JSON_DEPTH``: Python's decoder recurses once per
level) or whose fields the model refuses. An empty body, with or without a Content-Type, is ``{}``.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestPayloadError
from pydantic import BaseModel, ValidationError

from telehealth_client.api.errors import ApiError
from telehealth_client.pubsub.bounded_json import MAX_JSON_DEPTH, JsonLimitError, loads

JSON = "application/json"


async def read_body(model: type[BaseModel], request: web.Request) -> BaseModel:
    """The request's body as ``model``, or the ApiError that refuses it."""
    try:
        raw = await request.read()  # over client_max_size: aiohttp's 413
    except (RequestPayloadError, HttpProcessingError):
        raise ApiError(
            400, "bad-request", "the body could not be read", [("body", "is not readable as sent")]
        ) from None
    if not raw.strip():
        return _validated(model, {})
    if request.content_type != JSON:
        raise ApiError(
            415, "unsupported-media-type", f"the body must be {JSON}", [("body", f"must be sent as {JSON}")]
        )
    try:
        data = loads(raw.decode("utf-8"), max_depth=MAX_JSON_DEPTH)
    except UnicodeDecodeError:
        raise ApiError(
            422, "invalid-body", "the body is not valid JSON", [("body", "is not UTF-8")]
        ) from None
    except JsonLimitError as exc:
        raise ApiError(
            422, "invalid-body", "the body is beyond the API's bounds", [("body", str(exc))]
        ) from None
    except ValueError as exc:
        reason = getattr(exc, "msg", "is not valid JSON")
        raise ApiError(422, "invalid-body", "the body is not valid JSON", [("body", reason)]) from None
    if not isinstance(data, dict):
        raise ApiError(422, "invalid-body", "the body must be a JSON object", [("body", "must be an object")])
    return _validated(model, data)


def _validated(model: type[BaseModel], data: dict[str, Any]) -> BaseModel:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = [
            (".".join(str(part) for part in error["loc"]) or "body", error["msg"]) for error in exc.errors()
        ]
        raise ApiError(422, "invalid-body", "the body has invalid fields", problems) from None
