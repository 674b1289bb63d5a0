"""The fleet agent: the box's MQTT link to the fleet operator (docs/mqtt.md).

`topics` (the topic tree), `broker` (where and how to connect), `auth` (signed commands),
`commands` (parse, authorize, run, answer) and `agent` (the supervised component); the
daemon builds it with `firmware.components.fleet`.
"""
