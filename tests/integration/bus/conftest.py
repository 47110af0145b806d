"""Fixtures for the bus tests: the real relay and real PubNubBus clients on the real SDK."""

from __future__ import annotations
