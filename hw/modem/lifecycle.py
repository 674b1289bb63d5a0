"""`AsyncClosing`: the `async with` protocol the modem stack's resources share.

The serial transport, the AT channel, the modem and the simulator are all used as
`async with x:`; each written out its own `__aenter__`/`__aexit__` pair, which said the same
thing four times: entering makes the object ready and hands it back, leaving closes it
whatever the exit, and an exception is never swallowed.
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
