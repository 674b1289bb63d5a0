"""Which payments an attempt is working on right now, shared by the POS service and the
forwarder of one process.

A payment is sent to the gateway by one attempt at a time. The forwarder claims each
payment it works on; the POS service claims an interrupted payment before it re-drives
it for a POS retry (otherwise the forwarder could look it up, get "not found" while the
re-driven request is on its way, and close it as never received — then swallow the
approval that arrives). A claim is released whatever happens.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator


class Claims:
    def __init__(self) -> None:
        self._held: set[str] = set()
        self._released = asyncio.Event()

    def __contains__(self, payment_id: object) -> bool:
        return payment_id in self._held

    def ids(self) -> set[str]:
        return set(self._held)

    def try_claim(self, payment_id: str) -> bool:
        if payment_id in self._held:
            return False
        self._held.add(payment_id)
        return True

    def release(self, payment_id: str) -> None:
        self._held.discard(payment_id)
        self._released.set()

    @contextlib.asynccontextmanager
    async def waiting(self, payment_id: str, timeout_s: float) -> AsyncIterator[bool]:
        """Claim `payment_id`, waiting up to `timeout_s` for another holder to finish;
        yields whether the claim was had (and releases it on exit)."""
        got = self.try_claim(payment_id)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                while not got:
                    self._released.clear()
                    await self._released.wait()
                    got = self.try_claim(payment_id)
        try:
            yield got
        finally:
            if got:
                self.release(payment_id)
