"""The wire contract with the provider's browser app, as pure code (no I/O)."""
