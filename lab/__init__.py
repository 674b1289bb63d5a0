"""The drill's world: everything outside the box that the outage drill and the tests stand up.

A shop in network namespaces (`shop`, `netns`), faults at its ISPs (`faults`), a POS on
its LAN (`pos`), the card gateway's simulator (`gateway_sim`), the fleet's broker and
operator (`fleet`), the real daemon as a subprocess (`box`), and the drill that plays the
KT 2021 outage against them (`drill`).

Not part of the product: the product's packages never import it (the one exception is
`storebox drill`, which loads it inside its command), and the Debian package leaves it
out. It depends on the product only for the protocols it speaks to the box: the gateway
protocol (`payments_cache.gateway`, the sealed-card format, Luhn), the fleet's MQTT
payloads (`firmware.fleet.topics`) and the configuration schema (`firmware.config`).
"""
