"""The tests' one notion of time.

Vocabulary (the same as the product's): `monotonic` is seconds that only move forward
(`time.monotonic`), `wall` is what `time.time()` says (stepped by NTP or the modem's
NITZ, 0 on a Pi without a battery-backed clock), `sleep` waits. Code under test takes
them as `monotonic=`, `wall=` and `sleep=`; a test hands it the bound methods of one
`ManualClock`, so both kinds of time stay consistent.

`VirtualTimeLoop` is an asyncio loop whose time jumps to the next timer whenever nothing
is ready to run: a test of "fail over after 3 s" or "retry after an hour" runs at once,
with real sockets and real tasks. `simulate(main)` runs a coroutine function on one.
"""

from __future__ import annotations

import asyncio
import selectors
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

#: 2023-11-14T22:13:20Z: a wall time well after any clock floor.
T0 = 1_700_000_000.0


class ManualClock:
    """Monotonic and wall seconds moved by hand. `advance` is time passing (both move);
    `step_wall` is the wall clock being set (monotonic time does not move)."""

    def __init__(self, *, wall: float = T0, monotonic: float = 1000.0) -> None:
        self.wall_s = wall
        self.monotonic_s = monotonic

    def monotonic(self) -> float:
        return self.monotonic_s

    def wall(self) -> float:
        return self.wall_s

    def now(self) -> datetime:
        """The wall time as an aware UTC datetime."""
        return datetime.fromtimestamp(self.wall_s, UTC)

    async def sleep(self, seconds: float) -> None:
        """A sleep that lets time pass at once (and yields to the loop once)."""
        self.advance(max(0.0, seconds))
        await asyncio.sleep(0)

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError(f"time cannot pass backwards: seconds={seconds!r}")
        self.wall_s += seconds
        self.monotonic_s += seconds

    def step_wall(self, seconds: float) -> None:
        self.wall_s += seconds


class _FastForward:
    """Wraps the real selector: when the loop would block until its next timer and no
    I/O is ready, jump the clock to that timer instead of waiting."""

    def __init__(self, loop: VirtualTimeLoop) -> None:
        self._real = selectors.DefaultSelector()
        self._loop = loop

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    def select(self, timeout: float | None = None) -> list[Any]:
        events = self._real.select(0)
        if events:
            return events
        if timeout is None:  # no timer at all: only I/O could wake us
            events = self._real.select(5.0)
            if not events:
                raise RuntimeError("virtual time: nothing scheduled and no I/O (deadlock)")
            return events
        if timeout > 0:
            self._loop.advance(timeout)
        return []


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    def __init__(self) -> None:
        self._now = 1000.0
        super().__init__(_FastForward(self))  # type: ignore[arg-type]

    def time(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        self._now += seconds


def simulate(main: Callable[[], Awaitable[None]]) -> None:
    """Run `main()` on a `VirtualTimeLoop`."""
    with asyncio.Runner(loop_factory=VirtualTimeLoop) as runner:
        runner.run(main())  # type: ignore[arg-type]


def loop_time() -> float:
    """The running loop's (possibly virtual) monotonic time."""
    return asyncio.get_running_loop().time()
