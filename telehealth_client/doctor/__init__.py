"""``telehealth-agent doctor``: an installed kiosk or cart checked end to end, one line per check.

In order: the settings (``settings``), the credentials (``credentials``), the PubNub origin
(``origin``), the clinic backend with this device's credential (``clinic``), TURN (``turn``), the
camera and the microphone (``device_checks``), the local API (``local_api``), the clock against the
clinic's (``clock``), free disk space (``disk``) and the unit's exposure score (``unit``).
``runner`` runs them (each with a time limit, those after the first two at once) and ``command``
is the subcommand; ``report`` holds what each found and the fix when it failed.
"""
