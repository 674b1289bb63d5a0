"""The live stream, `GET /api/stream`: server-sent events `box`, `event`, `incident`.

Every change becomes one frame, serialised once and appended to one bounded ring that
every viewer reads from its own position. A viewer wakes when there is something new,
waits `COALESCE_S` more and writes all that came in one write: one socket write per
viewer per 0.1 s, not one per change (20 dashboards at 1,700 changes a second were 33,000
writes a second and starved the ingest, BENCHMARKS.md "Fleet"). A viewer that falls more
than the ring behind skips what it lost, as a full queue dropped the oldest before.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections import deque

from aiohttp import web

#: Frames kept for the slowest viewer.
FRAMES = 4096
#: A viewer collects this long after the first new frame before it writes.
COALESCE_S = 0.1
#: A comment line this often keeps proxies from closing an idle stream.
KEEPALIVE_S = 15.0


class Broadcast:
    def __init__(self, size: int = FRAMES, coalesce_s: float = COALESCE_S) -> None:
        self.frames: deque[bytes] = deque(maxlen=size)
        self.count = 0  # frames ever published: the position after the newest
        self.coalesce_s = coalesce_s
        #: One marker per connected viewer (`len()` is how many watch).
        self.viewers: set[object] = set()
        self._new: asyncio.Future[None] | None = None

    def publish(self, frame: bytes) -> None:
        self.frames.append(frame)
        self.count += 1
        if self._new is not None and not self._new.done():
            self._new.set_result(None)

    def since(self, position: int) -> tuple[list[bytes], int]:
        """The frames after `position` still in the ring, and the new position."""
        first = self.count - len(self.frames)
        start = max(position, first)
        return list(itertools.islice(self.frames, start - first, None)), self.count

    async def wait(self, position: int, within_s: float) -> bool:
        """Whether a frame after `position` came within `within_s`."""
        if self.count > position:
            return True
        if self._new is None or self._new.done():
            self._new = asyncio.get_running_loop().create_future()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(within_s):
                await asyncio.shield(self._new)
        return self.count > position

    async def serve(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                               "Cache-Control": "no-cache"})
        await response.prepare(request)
        me = object()
        self.viewers.add(me)
        position = self.count
        try:
            await response.write(b": storebox fleet\n\n")
            while True:
                if not await self.wait(position, KEEPALIVE_S):
                    await response.write(b": keepalive\n\n")
                    continue
                await asyncio.sleep(self.coalesce_s)
                frames, position = self.since(position)
                await response.write(b"".join(frames))
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            self.viewers.discard(me)
        return response
