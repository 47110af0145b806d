"""Suite-wide settings.

Hypothesis draws new examples on every run while we develop; in CI (``CI=true``) it draws the same
ones every time, so a run's verdict never depends on the examples a random seed happened to pick.
"""

from __future__ import annotations

import os

from hypothesis import settings

settings.register_profile("ci", derandomize=True, database=None, print_blob=True)
if os.environ.get("CI") == "true":
    settings.load_profile("ci")
