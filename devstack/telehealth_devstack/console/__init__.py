"""The provider console for integrators: a browser page (PubNub JavaScript SDK, the browser's WebRTC)
that plays a provider against a kiosk on the development stack, and the loopback server that hands
it what a provider app would get from its own backend. FOR DEVELOPMENT ONLY."""

from telehealth_devstack.console.backend import ConsoleSettings
from telehealth_devstack.console.server import ProviderConsole

__all__ = ["ConsoleSettings", "ProviderConsole"]
