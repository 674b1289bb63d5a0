"""The box's components, one module each, and the context their factories are given.

`context` (BoxContext, the factory type), `payments` (store, POS service, forwarder),
`modem` (the LTE modem, its health and hot-standby data call), `failover` (probes,
decisions, routes), `ledger` (the outage ledger), `leds` (the LED panel: where each
LED's pattern is chosen) and `fleet` (the MQTT agent and the commands it runs). Which
are built, in what order, and what each is handed from another: `firmware.daemon`.
"""
