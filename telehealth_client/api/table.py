"""Every route of the API, in the order the OpenAPI document lists them."""

from __future__ import annotations

from telehealth_client.api import (
    routes_call,
    routes_chat,
    routes_devices,
    routes_emergency,
    routes_patient,
    routes_previews,
    routes_provider,
    routes_status,
)
from telehealth_client.api.routing import Route

ROUTES: list[Route] = [
    *routes_status.ROUTES,
    *routes_patient.ROUTES,
    *routes_provider.ROUTES,
    *routes_call.ROUTES,
    *routes_chat.ROUTES,
    *routes_emergency.ROUTES,
    *routes_previews.ROUTES,
    *routes_devices.ROUTES,
]
