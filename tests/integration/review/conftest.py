"""The clinic fixtures (real relay, real clinic stand-in over HTTP), shared with the review tests."""

from tests.integration.clinic.conftest import (  # noqa: F401 (fixtures)
    clinic,
    clinic_relay,
    http,
    make_clinic,
    offline_clinic,
)
