"""Shared test helper: a simulator and a channel connected to it over a real pty."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from hw.modem.channel import AtChannel
from hw.modem.simulator import ModemSimulator


@asynccontextmanager
async def connected(**simulator: Any) -> AsyncIterator[tuple[ModemSimulator, AtChannel]]:
    """`ModemSimulator(**simulator)` running, and an `AtChannel` open on its pty."""
    async with ModemSimulator(**simulator) as sim, await AtChannel.open(sim.slave_path) as ch:
        yield sim, ch
