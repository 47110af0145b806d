"""Access Manager tokens, the clinic backend client and the audit trail."""
