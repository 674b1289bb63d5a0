"""Payments steered around a brownout, composed for the box (`[steer]`).

The decision (`failover.steer`) and its application (`failover.steering`) know nothing
of the box: here they get their thresholds from `[steer]`, their destinations from
`payments.gateway_url` (resolved at every steer: a gateway's addresses move) and
`steer.destinations`, and a closer that removes the rules when the daemon stops. The
failover component (`firmware.components.failover`) hands the result to the engine and
turns its changes into `uplink.steer`, the LED and the `steer`/`unsteer` events.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
from collections.abc import Callable, Sequence
from urllib.parse import urlsplit

from failover.routes import Uplink
from failover.steer import SteerChange, SteerConfig, SteerPolicy
from failover.steering import Steering, SteerRoutes
from firmware.components.context import BoxContext, remove_then_close
from firmware.config import Config
from firmware.errors import FirmwareError

__all__ = ["build_steering", "gateway_destinations", "steer_config"]

log = logging.getLogger("storebox.steer")

OnSteer = Callable[[SteerChange, list[str], int], None]


class SteerDestinationError(FirmwareError):
    """The gateway's host could not be resolved and nothing else is configured to steer."""

    def __init__(self, host: str, reason: str) -> None:
        self.host = host
        self.reason = reason
        super().__init__(f"steer: gateway host {host!r} not resolved: {reason}")


def steer_config(config: Config) -> SteerConfig:
    """`[steer]` as the policy's thresholds (percentages as fractions)."""
    steer = config.steer
    return SteerConfig(
        steer_loss=steer.steer_loss_pct / 100, steer_latency_ms=steer.steer_latency_ms,
        unsteer_loss=steer.unsteer_loss_pct / 100,
        unsteer_latency_ms=steer.unsteer_latency_ms, steer_after_s=steer.steer_after_s,
        unsteer_after_s=steer.unsteer_after_s,
        steer_min_interval_s=steer.steer_min_interval_s, window_s=steer.window_s)


async def gateway_destinations(gateway_url: str, extra: Sequence[str]) -> list[str]:
    """The gateway's addresses (the URL's host, resolved now) and `extra`."""
    parts = urlsplit(gateway_url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    found: list[str] = []
    try:
        found = [str(ipaddress.ip_address(host))]
    except ValueError:
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(
                host, port, type=socket.SOCK_STREAM)
        except OSError as exc:
            if not extra:
                raise SteerDestinationError(host, str(exc)) from exc
            log.warning("steer: gateway host %r not resolved (%s): steering %s only",
                        host, exc, ", ".join(extra))
        else:
            found = sorted({str(info[4][0]) for info in infos})
    return [*found, *(e for e in extra if e not in found)]


def build_steering(context: BoxContext, lte: Uplink, on_steer: OnSteer) -> Steering | None:
    """The engine's steering, or None when `[steer]` is off or routes are only observed."""
    config = context.config
    if not config.steer.enabled or config.routing.backend == "none":
        return None
    routes = SteerRoutes(lte)
    extra = list(config.steer.destinations)

    async def destinations() -> list[str]:
        return await gateway_destinations(config.payments.gateway_url, extra)

    steering = Steering(SteerPolicy(steer_config(config)), routes, destinations,
                        on_steer=on_steer)

    context.closers.append(remove_then_close(steering.remove, routes.close,
                                             what="steer rules", log=log))
    return steering
