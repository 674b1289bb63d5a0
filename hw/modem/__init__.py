"""LTE modem control: AT response parsers (`hw.modem.parsers`) and their errors."""
