"""How the payments side is told about uplinks, without knowing who decides.

`payments_cache` stands alone: the composition root hands it an `UplinkSignal`
and calls `set()` as the failover engine's view changes. Online-first uses it to
skip a doomed online attempt when no uplink works (the answer comes at once
instead of after the online deadline), and the forwarder waits on it to drain
as soon as a link returns.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Literal

Reachability = Literal["up", "down", "unknown"]


class UplinkSignal:
    def __init__(self, initial: Reachability = "unknown") -> None:
        self._state: Reachability = initial
        self._up = asyncio.Event()
        self._listeners: list[Callable[[Reachability], None]] = []
        self._generation = 0
        if initial != "down":
            self._up.set()

    @property
    def state(self) -> Reachability:
        return self._state

    @property
    def generation(self) -> int:
        """Bumped by `switched()`: failures seen on an older path say nothing about this one."""
        return self._generation

    def switched(self) -> None:
        """Traffic now leaves by another uplink (a failover or failback): what the payments
        side learnt about reaching the gateway is stale; listeners hear the state again."""
        self._generation += 1
        for listener in self._listeners:
            listener(self._state)

    def worth_trying(self) -> bool:
        """False only when the failover engine knows no uplink can reach the gateway."""
        return self._state != "down"

    def set(self, state: Reachability) -> None:
        if state == self._state:
            return
        self._state = state
        if state == "down":
            self._up.clear()
        else:
            self._up.set()
        for listener in self._listeners:
            listener(state)

    def on_change(self, listener: Callable[[Reachability], None]) -> None:
        self._listeners.append(listener)

    async def wait_usable(self) -> None:
        """Return once an uplink may reach the gateway (immediately unless down)."""
        await self._up.wait()
