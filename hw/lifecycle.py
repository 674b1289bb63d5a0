"""`AsyncClosing`: the `async with` protocol of objects that hold an OS resource.

The modem's serial transport, AT channel, the modem itself and its simulator, and failover's
netlink `LinkWatcher` (failover may use hw, README "Imports") are all used as `async with x:`;
each wrote out its own `__aenter__`/`__aexit__` pair, which said the same thing five times:
entering makes the object ready and hands it back, leaving closes it whatever the exit, and
an exception is never swallowed.
"""

from __future__ import annotations

from types import TracebackType
from typing import Self

__all__ = ["AsyncClosing"]


class AsyncClosing:
    """Mixin: `async with x` awaits `x._enter()` (nothing by default: an object built by its
    `open()` factory is ready) and returns `x`; leaving awaits `x.close()` and lets any
    exception through."""

    async def close(self) -> None:
        """Release what the object holds; idempotent (subclasses say what)."""
        raise NotImplementedError

    async def _enter(self) -> None:
        """What entering `async with` does before handing the object back."""

    async def __aenter__(self) -> Self:
        await self._enter()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
