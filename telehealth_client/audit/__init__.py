"""The audit trail: events of IDs only, the device's keyed hash chain in SQLite, delivery to the
clinic's sink and the audit channel, and the checks of ``telehealth-agent audit``."""
