"""At most one event per kind and window: a failing disk must not flood the LTE link.

`EventLimiter.allow(key)` says whether an event of that kind may go out now and how many
were held back since the last one went out (to be reported with it).
"""

from __future__ import annotations

import time
from collections.abc import Callable


class EventLimiter:
    def __init__(self, window_s: float = 60.0,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self._window_s = window_s
        self._monotonic = monotonic
        self._last: dict[str, float] = {}
        self._held: dict[str, int] = {}

    def allow(self, key: str) -> int | None:
        """None: hold this one back. Otherwise the number held back before it."""
        now = self._monotonic()
        last = self._last.get(key)
        if last is not None and now - last < self._window_s:
            self._held[key] = self._held.get(key, 0) + 1
            return None
        self._last[key] = now
        return self._held.pop(key, 0)
