"""One consultation: its pure state machine and roster, and its state file."""
