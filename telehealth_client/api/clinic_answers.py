"""What the API answers when the clinic backend said no or did not answer (one mapping for all routes).

A refusal (a 4xx from the clinic: its verdict on the request, asking again will not change it) is
422 naming the field the clinic named (in the API's own spelling), or ``body`` when it named none,
with the clinic's reason; a 409 from the clinic stays 409. Only no answer, a time-out, a 5xx, a
401 (a credential swap under way), a 408 or a 429 is 503 ``clinic-unavailable``: try again.
"""

from __future__ import annotations

from telehealth_client.api.errors import ApiError
from telehealth_client.security.clinic_client import ClinicError

# The clinic's request fields in the API's spelling (its token request names the patient
# ``userId``, its invite the specialist ``invitedProviderId``).
_API_FIELDS = {"userId": "patientId", "invitedProviderId": "providerId"}
# 4xx answers that are not a verdict on the request: they may pass if asked again.
_TRANSIENT = frozenset({401, 408, 429})


def is_refusal(exc: ClinicError) -> bool:
    """The clinic answered with its verdict on the request (a 4xx that asking again will not change)."""
    return exc.status is not None and 400 <= exc.status < 500 and exc.status not in _TRANSIENT


def clinic_answer(exc: ClinicError) -> ApiError:
    """The API's refusal for ``exc``: 422 (or 409) with the clinic's reason, else 503."""
    if not is_refusal(exc):
        http = f" (HTTP {exc.status})" if exc.status else ""
        return ApiError(503, "clinic-unavailable", f"the clinic backend did not answer{http}; try again")
    # The reason is "refused: <field>: <why>" when the clinic named a field (clinic_client._refusal).
    named, _, why = exc.reason.removeprefix("refused").removeprefix(":").partition(":")
    field = _API_FIELDS.get(named.strip(), named.strip()) if why else "body"
    reason = why.strip() or f"refused by the clinic (HTTP {exc.status})"
    if exc.status == 409:
        return ApiError(409, "clinic-conflict", f"the clinic refused it: {reason}", [(field, reason)])
    return ApiError(422, "invalid-body", "the clinic refused the request", [(field, reason)])
