"""The outage drill: a shop in network namespaces, the real daemon, and the KT 2021 outage.

`storebox drill` (and `make run`) builds the shop (`shop`), starts the gateway simulator
and the daemon with the modem simulator and mock LEDs, runs a POS on the LAN, plays a
timeline of faults at the ISPs (`faults`, `timeline`), shows the box live (`live`) and
ends with a report that fails on any lost answer, lost or duplicated payment, slow
failover or false failover (`report`), or a brownout the box did not steer around in
time, or with a failover or slow payments (`brownout`).
"""
