"""The shop LAN's own services: DHCP and a caching DNS forwarder that follows the uplink.

A plug-in shop router hands out addresses and a resolver; a box that does neither leaves
the LAN's devices with the wired ISP's resolvers, which are unreachable over LTE. The box
serves both with dnsmasq (`dnsmasq`: its configuration, its servers file, its leases),
forwarding to the active uplink's resolvers (`resolvers`: configured or learnt per uplink,
and the order they are asked in). `firmware.components.lan_services` runs it.
"""
