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
