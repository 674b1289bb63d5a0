"""Payments steered around a brownout, composed for the box (`[steer]`).

The decision (`failover.steer`) and its application (`failover.steering`) know nothing
of the box: here they get their thresholds from `[steer]`, their destinations from
`payments.gateway_url` (resolved at every steer: a gateway's addresses move),
`steer.destinations` and the fleet broker (`steer.include_fleet`), and a closer that
removes the rules when the daemon stops. The failover component
(`firmware.components.failover`) hands the result to the engine and turns its changes into
`uplink.steer`, the LED and the `steer`/`unsteer` events.
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

__all__ = ["build_steering", "fleet_destinations", "gateway_destinations", "steer_config"]

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


async def _addresses(url: str, default_port: int) -> list[str]:
    """The addresses of `url`'s host: itself when it is one, else resolved now."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    try:
        return [str(ipaddress.ip_address(host))]
    except ValueError:
        infos = await asyncio.get_running_loop().getaddrinfo(
            host, parts.port or default_port, type=socket.SOCK_STREAM)
        return sorted({str(info[4][0]) for info in infos})


async def gateway_destinations(gateway_url: str, extra: Sequence[str]) -> list[str]:
    """The gateway's addresses (the URL's host, resolved now) and `extra`."""
    found: list[str] = []
    try:
        found = await _addresses(gateway_url, 443 if gateway_url.startswith("https") else 80)
    except OSError as exc:
        host = urlsplit(gateway_url).hostname or ""
        if not extra:
            raise SteerDestinationError(host, str(exc)) from exc
        log.warning("steer: gateway host %r not resolved (%s): steering %s only",
                    host, exc, ", ".join(extra))
    return [*found, *(e for e in extra if e not in found)]


async def fleet_destinations(mqtt_url: str) -> list[str]:
    """The fleet broker's addresses: its session goes with the payments, or it would time
    out on the lossy line and the operator would see the shop drop off. Unresolved, it
    stays where it is (the payments are what matters)."""
    try:
        return await _addresses(mqtt_url, 8883 if mqtt_url.startswith("mqtts") else 1883)
    except OSError as exc:
        log.warning("steer: fleet broker %r not resolved (%s): not steered",
                    urlsplit(mqtt_url).hostname, exc)
        return []


def build_steering(context: BoxContext, lte: Uplink, on_steer: OnSteer) -> Steering | None:
    """The engine's steering, or None when `[steer]` is off or routes are only observed."""
    config = context.config
    if not config.steer.enabled or config.routing.backend == "none":
        return None
    routes = SteerRoutes(lte)
    extra = list(config.steer.destinations)

    fleet = config.fleet.mqtt_url if config.steer.include_fleet else ""

    async def destinations() -> list[str]:
        found = await gateway_destinations(config.payments.gateway_url, extra)
        more = await fleet_destinations(fleet) if fleet else []
        return [*found, *(a for a in more if a not in found)]

    steering = Steering(SteerPolicy(steer_config(config)), routes, destinations,
                        on_steer=on_steer)

    context.closers.append(remove_then_close(steering.remove, routes.close,
                                             what="steer rules", log=log))
    return steering
