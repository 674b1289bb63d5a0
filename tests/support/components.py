"""Components used by daemon tests through `debug.extra_components`."""

from __future__ import annotations

import asyncio
from typing import Any


class Crashing:
    """Raises on its first two runs, then runs until cancelled."""

    name = "crashy"

    def __init__(self) -> None:
        self.runs = 0

    async def run(self) -> None:
        self.runs += 1
        if self.runs <= 2:
            raise RuntimeError(f"boom {self.runs}")
        await asyncio.Event().wait()


def crashing(context: Any) -> Crashing:
    return Crashing()


class Blocking:
    """Blocks the event loop once for `seconds` (a bug the watchdog must notice)."""

    name = "blocker"

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    async def run(self) -> None:
        import time

        await asyncio.sleep(0)
        time.sleep(self.seconds)  # deliberately blocking
        await asyncio.Event().wait()


def blocking(context: Any) -> Blocking:
    return Blocking(1.0)
