"""The box's own small databases: the outage ledger (CONTRACTS §8) and the recorded
migrations they share (`migrate`)."""
