"""The simulated EC25's AT commands, one module per family (basic and identity, SIM,
network, packet data, clock, power), each a mixin over `DeviceCore` holding the family's
`_cmd_<name>` handlers and the scenario knobs that belong to it. `ModemSimulator`
(`hw.modem.simulator.ec25`) composes them."""
