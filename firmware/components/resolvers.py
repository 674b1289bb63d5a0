"""Composes each uplink's resolvers (`firmware.uplink_dns`), shared by the failover
engine's probes and the LAN's DNS: learnt from NetworkManager when it owns the uplinks
(`routing.backend = "networkmanager"`), otherwise from the modem's data call only."""

from __future__ import annotations

from firmware.components.context import BoxContext
from firmware.lan.resolvers import NetworkManagerResolvers
from firmware.uplink_dns import UplinkResolvers

__all__ = ["build_uplink_resolvers"]


def build_uplink_resolvers(context: BoxContext) -> UplinkResolvers:
    learn = None
    if context.config.routing.backend == "networkmanager":
        nm = NetworkManagerResolvers()
        context.closers.append(nm.close)
        learn = nm
    return UplinkResolvers(context.config, context.state, learn)
