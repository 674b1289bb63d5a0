"""The other SIM before offline mode (``failover.engine`` docs, "SIM switch").

When LTE fails while it is the active uplink and the selector gives up, the engine
asks ``SimFallback`` first: if a ``switch_sim()`` callback was given and the fallback
is armed, one attempt runs (the callback, then LTE judged afresh for up to
``verdict_timeout_s``) and offline mode waits for it. One attempt per LTE failure:
the engine re-arms the fallback once LTE has been usable again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["SimFallback", "SimSteps", "SwitchSim"]

log = logging.getLogger("failover.engine")

SwitchSim = Callable[[], Awaitable[bool]]


@dataclass(frozen=True, slots=True)
class SimSteps:
    """What the engine does around a successful SIM switch."""

    rejudge: Callable[[], None]  # LTE judged afresh: a new monitor, probed at full rate
    ensure_route: Callable[[], Awaitable[None]]  # LTE's route back (its link may be new)
    until_chosen: Callable[[], Awaitable[None]]  # returns once the selector picks an uplink
    over: Callable[[], None]  # the attempt ended, either way: offline mode may follow


class SimFallback:
    """One SIM switch attempt per LTE failure, run in the engine's task group."""

    def __init__(self, switch_sim: SwitchSim | None, steps: SimSteps, *,
                 switch_timeout_s: float, verdict_timeout_s: float,
                 report: Callable[[BaseException], None]) -> None:
        self._switch_sim = switch_sim
        self._steps = steps
        self._switch_timeout_s = switch_timeout_s
        self._verdict_timeout_s = verdict_timeout_s
        self._report = report
        self.armed = True
        self.switches = 0
        self._task: asyncio.Task[None] | None = None

    @property
    def ready(self) -> bool:
        """A callback is there and no attempt was spent on this LTE failure yet."""
        return self._switch_sim is not None and self.armed

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def rearm(self) -> None:
        self.armed = True

    def start(self, tg: asyncio.TaskGroup) -> None:
        self.armed = False
        self._task = tg.create_task(self._attempt(), name="failover-sim-switch")

    def describe(self) -> dict[str, Any]:
        return {"switch_available": self._switch_sim is not None,
                "switches": self.switches, "armed": self.armed, "switching": self.running}

    async def _switch(self) -> bool:
        assert self._switch_sim is not None
        try:
            async with asyncio.timeout(self._switch_timeout_s):
                return bool(await self._switch_sim())
        except Exception as exc:
            self._report(exc)
            return False

    async def _attempt(self) -> None:
        try:
            if not await self._switch():
                log.warning("failover: SIM switch did not help; offline mode")
                return
            self.switches += 1
            log.warning("failover: LTE switched to its other SIM; judging it afresh")
            self._steps.rejudge()
            await self._steps.ensure_route()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._verdict_timeout_s):
                    await self._steps.until_chosen()
        finally:
            self._steps.over()
