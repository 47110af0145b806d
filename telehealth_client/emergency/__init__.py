"""The department's escalations: the emergency desk (raise, deliver, notify, resolve), who may
resolve, and the alerts a provider has been shown."""
