"""The development stack: a local PubNub relay, the clinic stand-in, coturn, and the demo.

A distribution of its own (``devstack/pyproject.toml``), installed by ``scripts/setup.sh`` and the
test command, never by a kiosk or cart install: the product (``telehealth_client``, ``devices``)
imports nothing from it. FOR DEVELOPMENT, THE DEMO AND TESTS ONLY.
"""
