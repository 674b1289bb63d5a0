"""Route control for the engine: the selector's decisions applied, one at a time, and
the routes kept in place (``failover.engine`` docs: the route worker, maintenance).

A decision is applied through ``switch_uplink`` (routes make-before-break, then the
LAN forwarding, then the conntrack flush of the uplink traffic left). Decisions
taken while a switch runs are coalesced: the worker always applies the latest one.
A failed switch is reported and retried with exponential backoff (a new decision
cuts the wait short). An uplink left while it still works is flushed
``flush_grace_s`` later (a dead one at once): until then the LAN flows that started
on it keep it (sticky uplinks, ``failover.sticky``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from failover import link
from failover.link import Transition
from failover.routes import (
    ConnectionFlusher,
    Forwarding,
    RouteController,
    RouteProblem,
    SwitchReport,
    UplinkName,
    switch_uplink,
)
from failover.selector import UplinkSelector

__all__ = ["RouteApplier", "RouteTiming", "StickySync", "route_name"]

log = logging.getLogger("failover.engine")


class StickySync(Protocol):
    """What the engine needs from ``failover.sticky.StickyRoutes``."""

    async def sync(self) -> Any: ...


@dataclass(frozen=True, slots=True)
class RouteTiming:
    switch_timeout_s: float  # bounds a switch, a sticky sync, a maintenance call
    retry_initial_s: float  # backoff after a failed switch, doubling...
    retry_max_s: float  # ...up to this
    flush_grace_s: float  # flows on an uplink left while it works keep it this long


def route_name(choice: link.Uplink) -> UplinkName | None:
    if choice is link.Uplink.WIRED:
        return "wired"
    if choice is link.Uplink.LTE:
        return "lte"
    return None


class RouteApplier:
    """Applies the selector's latest decision; see module docs."""

    def __init__(self, routes: RouteController, selector: UplinkSelector, timing: RouteTiming,
                 *, forwarding: Forwarding | None, conntrack: ConnectionFlusher | None,
                 sticky: StickySync | None, report: Callable[[BaseException], None],
                 on_transition: Callable[[Transition, SwitchReport], None] | None) -> None:
        self.routes = routes
        self._selector = selector
        self._timing = timing
        self._forwarding = forwarding
        self.conntrack = conntrack
        self._sticky = sticky
        self._report = report
        self._on_transition = on_transition
        self.latest: Transition | None = None
        self._reported: Transition | None = None
        self.applied: link.Uplink | None = None  # None: nothing applied yet
        self.wake = asyncio.Event()
        self.switch_failures = 0
        self.switches = 0
        self.problems: list[RouteProblem] = []

    def decided(self, transition: Transition) -> None:
        self.latest = transition
        self.wake.set()

    @property
    def pending(self) -> bool:
        return self.latest is not None and (
            self.latest is not self._reported or self.applied is not self._selector.active)

    async def run(self, tg: asyncio.TaskGroup, *, usable: Callable[[UplinkName], bool],
                  defer_offline: Callable[[], bool]) -> None:
        """The worker: ``usable`` says whether an uplink still works (its flows get
        the grace period), ``defer_offline`` whether offline mode waits (a SIM switch)."""
        delay = self._timing.retry_initial_s
        while True:
            await self.wake.wait()
            self.wake.clear()
            if await self._apply_latest(tg, usable, defer_offline):
                delay = self._timing.retry_initial_s
                continue
            # Failed: retry after a backoff; a new decision cuts the wait short.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self.wake.wait()
            delay = min(delay * 2, self._timing.retry_max_s)
            self.wake.set()

    async def _apply_latest(self, tg: asyncio.TaskGroup, usable: Callable[[UplinkName], bool],
                            defer_offline: Callable[[], bool]) -> bool:
        """Apply the selector's current decision. False when it failed (retry)."""
        transition = self.latest
        if transition is None or not self.pending:
            return True
        target = self._selector.active
        if target is link.Uplink.NONE and defer_offline():
            return True
        previous = self.applied
        left: list[UplinkName] = []
        old = None if previous is None else route_name(previous)
        if old is not None and previous is not target:
            left.append(old)
        # flows on an uplink that still works (a failback) get a grace period to finish
        later = [n for n in left if usable(n)]
        try:
            async with asyncio.timeout(self._timing.switch_timeout_s):
                report = await switch_uplink(
                    route_name(target), routes=self.routes, forwarding=self._forwarding,
                    conntrack=self.conntrack, left=left,
                    flush=[n for n in left if n not in later])
        except Exception as exc:
            self.switch_failures += 1
            self._report(exc)
            return False
        self.applied = target
        self._reported = transition
        self.switches += 1
        if later and self.conntrack is not None:
            tg.create_task(self._flush_later(later, target), name="failover-late-flush")
        if self._on_transition is not None:
            try:
                self._on_transition(transition, report)
            except Exception as exc:
                self._report(exc)
        await self.sync_sticky()
        # A decision taken while switching is applied next (the wake flag is set).
        return True

    async def sync_sticky(self) -> None:
        """Bring the sticky tables in line with the main table (a failure is reported;
        the switch itself stands)."""
        if self._sticky is None:
            return
        try:
            async with asyncio.timeout(self._timing.switch_timeout_s):
                changes = await self._sticky.sync()
        except Exception as exc:
            self._report(exc)
        else:
            if changes:
                log.info("failover: sticky routes: %s", changes)

    async def _flush_later(self, names: list[UplinkName], target: link.Uplink) -> None:
        """Flush the flows still pinned to uplinks left while healthy, after a grace
        period (unless traffic went back to them meanwhile)."""
        await asyncio.sleep(self._timing.flush_grace_s)
        assert self.conntrack is not None
        for name in names:
            if self.applied is not target or route_name(self.applied) == name:
                return
            try:
                await self.conntrack.flush_uplink(self.routes.uplinks[name].interface)
            except Exception as exc:
                self._report(exc)

    async def ensure_present(self, names: Sequence[UplinkName],
                             timeout_s: float | None) -> None:
        """Each uplink's route out of it (its bound probes need one), problems noted."""
        try:
            async with asyncio.timeout(timeout_s):
                problems = await self.routes.ensure_present(list(names))
        except Exception as exc:
            self._report(exc)
        else:
            self._note_problems(problems, names)

    async def remember_addresses(self, names: Sequence[UplinkName]) -> None:
        """Let conntrack note the addresses of these (usable) uplinks, so that a flush
        after one died still knows the addresses it had."""
        addresses_of = getattr(self.conntrack, "addresses_of", None)
        if addresses_of is None:
            return
        for name in names:
            try:
                async with asyncio.timeout(self._timing.switch_timeout_s):
                    await addresses_of(self.routes.uplinks[name].interface)
            except Exception as exc:
                self._report(exc)

    def _note_problems(self, problems: list[RouteProblem],
                       checked: Sequence[UplinkName]) -> None:
        kept = [p for p in self.problems if p.uplink not in checked]
        new = kept + list(problems)
        if new != self.problems:
            for problem in problems:
                log.warning("failover: no route via %s (%s): %s", problem.uplink,
                            problem.interface, problem.reason)
        self.problems = new
