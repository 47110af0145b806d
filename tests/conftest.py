"""Suite-wide settings.

Hypothesis draws new examples on every run while we develop; in CI (``CI=true``) it draws the same
ones every time, so a run's verdict never depends on the examples a random seed happened to pick.

Tests whose verdict depends on real-time pacing (a call at its frame rate, a device at its sample
rate, Chromium, retransmission timers) are marked ``realtime``: ``scripts/test.sh`` runs them one
at a time, after the others ran two at a time, so another test's load never decides their verdict.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import settings

settings.register_profile("ci", derandomize=True, database=None, print_blob=True)
if os.environ.get("CI") == "true":
    settings.load_profile("ci")

# Node ID prefixes of the real-time tests: whole folders, then single files or tests.
REALTIME = (
    "tests/integration/media/",
    "tests/integration/interop/",
    "tests/integration/preflight/",
    "tests/integration/service/test_kiosk_clinic.py",
    "tests/integration/devices/",
    "tests/integration/console/",
    "tests/integration/api/test_api_call.py",
    "tests/integration/api/test_api_consultation.py",
    "tests/integration/api/test_api_devices.py",
    "tests/integration/api/test_api_mute.py",
    "tests/integration/api/test_api_previews.py",
    "tests/integration/api/test_technician_page.py",
    "tests/integration/consultation/test_started_by_media.py",
    "tests/integration/service/test_graceful_stop.py",
    "tests/integration/outbox/test_outbox_flush.py",
    "tests/integration/audit/test_audit_flush.py",
    "tests/integration/test_demo.py",
    "tests/integration/test_readme_curl.py",
    "tests/integration/test_systemd_watchdog.py",
    "tests/integration/soak/",
    "tests/integration/service/test_start_as_service.py",
    "tests/integration/service/test_sd_notify.py::test_a_sigterm_while_the_agent_is_still_importing",
    "tests/integration/test_cli.py::test_check_devices",
    "tests/integration/service/test_doctor.py::test_every_check_passes_on_the_development_stack",
    "tests/integration/network/test_turn_through_proxy.py",
    "tests/integration/network/test_proxy_refusal.py::test_the_bus_keeps_asking_a_refusing_proxy_at_its_slow_pace",
    "tests/unit/test_ice_tuning.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.nodeid.startswith(REALTIME):
            item.add_marker(pytest.mark.realtime)
