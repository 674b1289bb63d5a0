"""LTE modem control: serial transport, AT framing and channel, response parsers
(`hw.modem.parsers`), the EC25 simulator, and their errors (`hw.modem.errors`);
`hw.modem.reasons` says why LTE is not connected in plain language, `hw.modem.ports`
finds the AT port by USB ids (`lte.port = "auto"`)."""
