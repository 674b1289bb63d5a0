"""The box's own small databases: the outage ledger (docs/cli.md) and the recorded
migrations they share (`migrate`)."""
