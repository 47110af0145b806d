"""What survives a crash and a restart: the outbox and where its items went, sealing at rest,
the consultation's state file, and what SQLite promises about a committed write."""
