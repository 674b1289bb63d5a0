"""Test harness for `Modem` / `ModemSupervisor`: a simulator and a modem on a real pty, an
injectable fake sleep/clock, an event recorder, and a mock power-key pin wired to the
simulator the way the EC25's PWRKEY is wired to the module."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from gpiozero.pins.mock import MockPin

from hw.modem.channel import AtChannel
from hw.modem.modem import Modem
from hw.modem.profiles import Timeouts
from hw.modem.simulator import ModemSimulator
from tests.support.clock import ManualClock

#: Generous for a responsive simulator, short enough for tests of a hung one.
TIMEOUTS = Timeouts(command=1.0, network=5.0, data=3.0, radio=3.0, boot=3.0,
                    sim_settle=2.0, register=3.0)


@asynccontextmanager
async def modem_on(
    *,
    channel_options: dict[str, Any] | None = None,
    modem_options: dict[str, Any] | None = None,
    **simulator: Any,
) -> AsyncIterator[tuple[ModemSimulator, Modem]]:
    """A running `ModemSimulator(**simulator)` and a `Modem` on its pty (not initialised)."""
    options: dict[str, Any] = {"default_timeout": 1.0, "resync_timeout": 0.3,
                               "resync_attempts": 2}
    options.update(channel_options or {})
    mopts: dict[str, Any] = {"timeouts": TIMEOUTS}
    mopts.update(modem_options or {})
    async with ModemSimulator(**simulator) as sim:
        channel = await AtChannel.open(sim.slave_path, **options)
        modem = Modem(channel, **mopts)
        try:
            yield sim, modem
        finally:
            await modem.close()


def received_since(sim: ModemSimulator, mark: int) -> list[str]:
    return sim.received[mark:]


class FakeSleep(ManualClock):
    """The shared `ManualClock` (from 0 monotonic seconds) whose sleep — the instance
    itself, called — returns at once (after one loop turn) and records what was asked.

    `calls` records every duration (with `probe()`'s value when a probe is set, e.g. the
    power pin's level); `hooks[n]` runs (awaited) during the n-th call (1-based); sleeps
    of exactly `block` seconds wait until `release()` (a poll interval in `run()` tests),
    setting `blocked` when one starts."""

    def __init__(self, *, block: float | None = None) -> None:
        super().__init__(monotonic=0.0)
        self.calls: list[float] = []
        self.probed: list[tuple[float, Any]] = []
        self.probe: Callable[[], Any] | None = None
        self.hooks: dict[int, Callable[[], Awaitable[None]]] = {}
        self.block = block
        self.blocked = asyncio.Event()
        self._release = asyncio.Event()

    def release(self) -> None:
        self._release.set()

    async def sleep(self, seconds: float) -> None:
        self.calls.append(seconds)
        if self.probe is not None:
            self.probed.append((seconds, self.probe()))
        self.advance(seconds)
        hook = self.hooks.pop(len(self.calls), None)
        if hook is not None:
            await hook()
        if self.block is not None and seconds == self.block:
            self.blocked.set()
            await self._release.wait()
            self._release.clear()
        await asyncio.sleep(0)

    async def __call__(self, seconds: float) -> None:
        await self.sleep(seconds)


class Events:
    """`on_event(kind, **fields)` recorder with an awaitable `next(kind)`."""

    def __init__(self) -> None:
        self.items: list[tuple[str, dict[str, Any]]] = []
        self._queue: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue()

    def __call__(self, kind: str, **fields: Any) -> None:
        self.items.append((kind, fields))
        self._queue.put_nowait((kind, fields))

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [fields for k, fields in self.items if k == kind]

    def kinds(self) -> list[str]:
        return [k for k, _ in self.items]

    def clear(self) -> None:
        self.items.clear()
        while not self._queue.empty():
            self._queue.get_nowait()

    async def next(self, kind: str, timeout: float = 5.0) -> dict[str, Any]:
        async with asyncio.timeout(timeout):
            while True:
                got, fields = await self._queue.get()
                if got == kind:
                    return fields


class PowerKeyPin(MockPin):
    """A mock GPIO wired to the simulated EC25's PWRKEY: the end of each pulse (falling
    edge of the active-high GPIO) toggles the module — off when it is on (muted or not),
    on (boot) when it is off."""

    simulator: ModemSimulator | None = None
    toggles = 0

    def _change_state(self, value: bool) -> bool:
        changed: bool = super()._change_state(value)
        sim = self.simulator
        if changed and not value and sim is not None:
            self.toggles += 1
            if sim.power == "off":
                sim.power_cycle()
            else:
                sim.power_off()
        return changed


async def revive(sim: ModemSimulator, modem: Modem) -> None:
    """Power-cycle the simulator and return once it has booted (seen on the channel)."""
    with modem.channel.subscribe(["+QIND: PB DONE"]) as booted:
        sim.power_cycle()
        async with asyncio.timeout(5):
            await booted.get()
