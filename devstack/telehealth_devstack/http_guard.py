"""The development servers' guard against what aiohttp refuses before any handler runs: the
product's own (``telehealth_client.api.quiet_server``), so there is one copy. The relay serves
through ``GuardedServer`` directly; the clinic's and the console's applications through
``GuardedAppRunner``."""

from telehealth_client.api.quiet_server import Guard, GuardedAppRunner, GuardedServer, RequestCallable

__all__ = ["Guard", "GuardedAppRunner", "GuardedServer", "RequestCallable"]
