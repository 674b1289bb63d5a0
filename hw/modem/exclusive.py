"""`TaskLock`: the modem's exclusive-operation lock.

Every public `Modem` operation holds it for its whole command sequence, so a
multi-command operation (a data bring-up that reboots the modem, a recovery step) is
never interleaved with another task's commands; the holding task may take it again, so
operations nest freely inside one task (`connect_data` calls `initialise`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

__all__ = ["TaskLock"]


class TaskLock:
    """An asyncio lock the holding task may take again (nested operations)."""

    def __init__(self) -> None:
        self._lock = asyncio.Lock()
        self._owner: asyncio.Task[Any] | None = None
        self._depth = 0

    def locked(self) -> bool:
        return self._lock.locked()

    @contextlib.asynccontextmanager
    async def hold(self) -> AsyncIterator[None]:
        task = asyncio.current_task()
        if task is not None and self._owner is task:
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
        else:
            async with self._lock:
                self._owner, self._depth = task, 1
                try:
                    yield
                finally:
                    self._owner, self._depth = None, 0
