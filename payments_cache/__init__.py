"""Offline payments: encrypted store-and-forward, risk rules, POS API and forwarder."""
