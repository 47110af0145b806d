"""Which handler serves a request, from its method and raw path segments."""

from __future__ import annotations

from . import access_api, history_api, objects_api, presence_api, pubsub
from .http import Handler

_UUID_METHODS: dict[str, Handler] = {
    "GET": objects_api.get_uuid,
    "PATCH": objects_api.set_uuid,
    "DELETE": objects_api.remove_uuid,
}


def route(method: str, seg: list[str]) -> Handler | None:
    n = len(seg)
    head = seg[0] if seg else ""
    if head == "time" and method == "GET" and n == 2:
        return pubsub.time_now
    if head == "publish":
        if method == "GET" and n == 7:
            return pubsub.publish_get
        if method == "POST" and n == 6:
            return pubsub.publish_post
        return None
    if head == "signal" and method == "GET" and n == 7:
        return pubsub.signal
    if head not in ("v2", "v3") or n < 3:
        return None
    api = seg[1]
    if api == "subscribe" and method == "GET" and n == 5:
        return pubsub.subscribe
    if api == "presence" and method == "GET" and seg[2] == "sub-key":
        if n == 4 or (n == 6 and seg[4] == "channel"):
            return presence_api.here_now
        if n == 7 and seg[4] == "channel":
            return {"heartbeat": presence_api.heartbeat, "leave": presence_api.leave}.get(seg[6])
        return None
    if api in ("history", "history-with-actions") and n == 6 and seg[2] == "sub-key" and seg[4] == "channel":
        if head == "v2" and api == "history" and method == "GET":
            return history_api.history_v2
        if head == "v3" and method == "GET":
            return history_api.fetch
        if head == "v3" and api == "history" and method == "DELETE":
            return history_api.delete
        return None
    if head == "v2" and api == "objects" and n == 5 and seg[3] == "uuids":
        return _UUID_METHODS.get(method)
    if head == "v3" and api == "pam" and n >= 4 and seg[3] == "grant":
        if method == "POST" and n == 4:
            return access_api.grant_token
        if method == "DELETE" and n == 5:
            return access_api.revoke_token
    return None
