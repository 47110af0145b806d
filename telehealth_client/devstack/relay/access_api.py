"""Access Manager v3 REST calls: grant a token, revoke a token. Both need the secret key's signature."""

from __future__ import annotations

import json

from aiohttp import web

from .errors import service_error
from .http import Call, json_response


def _check_key(call: Call) -> None:
    if call.segments[2] != call.state.keys.subscribe_key:
        raise service_error(400, "Invalid Subscribe Key", "Access Manager")
    call.require_signature()


async def grant_token(call: Call) -> web.StreamResponse:
    # POST /v3/pam/{sub}/grant
    _check_key(call)
    try:
        request = json.loads(call.body)
    except ValueError:
        raise service_error(400, "Invalid request body: not JSON", "Access Manager") from None
    token = call.state.tokens.mint(request)
    return json_response(
        {"status": 200, "data": {"message": "Success", "token": token}, "service": "Access Manager"}
    )


async def revoke_token(call: Call) -> web.StreamResponse:
    # DELETE /v3/pam/{sub}/grant/{token}
    _check_key(call)
    call.state.tokens.revoke(call.segments[4])
    return json_response({"status": 200, "data": {"message": "Success"}, "service": "Access Manager"})
