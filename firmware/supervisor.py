"""Run components under supervision: a crash is logged, reported and restarted with backoff.

A component is anything with a `name` and an `async run()` that runs until
cancelled. The supervisor owns no task itself: the daemon's TaskGroup owns one
`supervise()` task per component, so cancellation flows from the top.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from firmware.state import BoxState

log = logging.getLogger("storebox.supervisor")


class Component(Protocol):
    name: str

    async def run(self) -> None: ...


@dataclass(frozen=True)
class Backoff:
    """Capped exponential backoff with full jitter; reset after a healthy run."""

    initial_s: float = 1.0
    cap_s: float = 60.0
    healthy_after_s: float = 60.0

    def delay(self, attempt: int, rand: Callable[[], float] = random.random) -> float:
        ceiling = min(self.cap_s, self.initial_s * (2 ** max(0, attempt - 1)))
        return float(ceiling / 2 + rand() * ceiling / 2)


class Supervisor:
    def __init__(self, state: BoxState, backoff: Backoff | None = None,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                 monotonic: Callable[[], float] | None = None) -> None:
        self.state = state
        self.backoff = backoff or Backoff()
        self._sleep = sleep
        self._monotonic = monotonic or asyncio.get_running_loop().time

    async def supervise(self, component: Component) -> None:
        """Run `component` until cancelled, restarting it whenever it raises."""
        status = self.state.component(component.name)
        attempt = 0
        while True:
            self.state.update(status, state="running")
            started = self._monotonic()
            try:
                await component.run()
            except asyncio.CancelledError:
                self.state.update(status, state="stopped")
                raise
            except Exception as exc:  # a component bug must not take the box down
                if self._monotonic() - started >= self.backoff.healthy_after_s:
                    attempt = 0
                attempt += 1
                delay = self.backoff.delay(attempt)
                reason = f"{type(exc).__name__}: {exc}"
                log.error("component %s crashed (%s); restart %d in %.1fs",
                          component.name, reason, attempt, delay, exc_info=exc)
                self.state.update(status, state="restarting", restarts=status.restarts + 1,
                                  last_error=reason, last_error_at=self.state.wall())
                self.state.events.emit(
                    "component_restarted", f"{component.name} crashed: {reason}",
                    severity="error", component=component.name, restarts=status.restarts,
                    retry_in_s=round(delay, 2))
                await self._sleep(delay)
            else:
                log.info("component %s finished", component.name)
                self.state.update(status, state="stopped")
                return
