"""TURN credentials for the media tests' coturn."""

from __future__ import annotations

import time

from telehealth_client.media.call import TurnConfig
from telehealth_devstack.turn import TurnServer, turn_rest_credentials


def turn_config(
    turn: TurnServer, user_id: str = "pat-1", *, expired: bool = False, tls: bool = False
) -> TurnConfig:
    """Credentials for ``turn``; with ``tls`` its ``turns:`` URL only, as a clinic on 443 hands out."""
    now = time.time() - 3600 if expired else None
    username, credential = turn_rest_credentials(turn.secret, user_id, 600, now=now)
    return TurnConfig(tuple(turn.tls_urls if tls else turn.urls), username, credential)
