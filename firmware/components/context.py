"""What the composition root (`firmware.daemon`) hands to every component factory.

A component factory builds one component from the `BoxContext`: it may add HTTP routes
to `context.app` (before it starts serving), open resources (registering closers) and
return the component to supervise, or None when it has nothing to run. What one
component needs from another (the modem's `switch_sim` for the failover engine, the
payments' `drain_queue` for the fleet agent) is not left in a slot for a later factory
to find: the daemon hands it over as a keyword argument (`firmware.daemon.compose`), so
the order the components are built in is written down in one place and no component
imports the daemon.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from aiohttp import web

from firmware.config import Config
from firmware.state import BoxState
from firmware.supervisor import Component
from firmware.tokens import TokenStore
from payments_cache.uplinks import UplinkSignal

__all__ = ["BoxContext", "ComponentFactory", "remove_then_close"]


@dataclass
class BoxContext:
    """What the composition root hands to every component factory: the box's shared
    state and the lists the daemon reads back (reload hooks, cleanups, closers)."""

    config: Config
    state: BoxState
    tokens: TokenStore
    app: web.Application
    #: Whether any uplink can reach the gateway, as the failover engine sees it.
    uplinks: UplinkSignal = field(default_factory=UplinkSignal)
    reload_hooks: list[Callable[[Config], None]] = field(default_factory=list)
    cleanups: list[Callable[[], None]] = field(default_factory=list)
    #: Closed in reverse order after every component task has stopped (e.g. the database).
    closers: list[Callable[[], Awaitable[None]]] = field(default_factory=list)


#: A factory named by `debug.extra_components = ["module:factory"]`: called with the
#: context once the built-in components are built, it returns the component to supervise.
ComponentFactory = Callable[[BoxContext], Component]


def remove_then_close(remove: Callable[[], Awaitable[object]],
                      close: Callable[[], Awaitable[None]], *, what: str,
                      log: logging.Logger) -> Callable[[], Awaitable[None]]:
    """A closer for what a component installed in the kernel (sticky routes, steer rules):
    `remove` it, logging a failure as `what` on the component's `log` so that shutdown goes
    on, and `close` its handle in any case."""
    async def closer() -> None:
        try:
            await remove()
        except Exception as exc:
            log.error("%s: %s", what, exc)
        finally:
            await close()

    return closer
