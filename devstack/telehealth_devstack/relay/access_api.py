"""Access Manager v3 REST calls: grant a token, revoke a token. Both need the secret key's signature."""

from __future__ import annotations

from aiohttp import web

from .errors import detailed_error, service_error
from .http import Call, json_response
from .jsonin import JsonInputError, loads


def _check_key(call: Call) -> None:
    if call.segments[2] != call.state.keys.subscribe_key:
        raise service_error(400, "Invalid Subscribe Key", "Access Manager")
    call.require_signature()


async def grant_token(call: Call) -> web.StreamResponse:
    # POST /v3/pam/{sub}/grant
    _check_key(call)
    try:
        request = loads(call.body)
    except JsonInputError as error:
        raise detailed_error(
            400,
            "Invalid request body",
            source="grant",
            detail=f"The body is {error}.",
            location="body",
            location_type="body",
        ) from None
    token = call.state.tokens.mint(request)
    return json_response(
        {"status": 200, "data": {"message": "Success", "token": token}, "service": "Access Manager"}
    )


async def revoke_token(call: Call) -> web.StreamResponse:
    # DELETE /v3/pam/{sub}/grant/{token}
    _check_key(call)
    call.state.revoke(call.segments[4])
    return json_response({"status": 200, "data": {"message": "Success"}, "service": "Access Manager"})
