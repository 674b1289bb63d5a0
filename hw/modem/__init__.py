"""LTE modem control: serial transport, AT framing and channel, response parsers
(`hw.modem.parsers`), the EC25 simulator, and their errors (`hw.modem.errors`)."""
