"""Carrier events from netlink, as an async iterator of ``(ifname, carrier_up)``.

A pyroute2 ``AsyncIPRoute`` socket subscribed to ``RTNLGRP_LINK`` delivers
``RTM_NEWLINK``/``RTM_DELLINK`` for every link change; the carrier is the
``IFF_LOWER_UP`` flag (cleared by cable pull, peer down, admin down, modem
detach; an interface that disappears counts as no carrier). The socket is
read by the event loop (a datagram endpoint on its fd), never blocking it.

On open the watcher subscribes first and dumps the links second, so no change
is lost between the two; it then reports the current state of every watched
interface once (``False`` for one that does not exist yet, e.g. ``wwan0``
before the modem enumerates) and afterwards only changes.

Feed the events to ``LinkMonitor.carrier()``: losing the carrier marks the
uplink down immediately, without waiting for probe rounds.

Needs pyroute2 >= 0.9 (``AsyncIPRoute``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable
from typing import Any, NamedTuple

from pyroute2 import AsyncIPRoute
from pyroute2.netlink.rtnl import RTM_DELLINK, RTM_NEWLINK, RTMGRP_LINK

from hw.lifecycle import AsyncClosing

__all__ = ["IFF_LOWER_UP", "CarrierEvent", "LinkWatcher"]

log = logging.getLogger(__name__)

IFF_LOWER_UP = 0x10000


class CarrierEvent(NamedTuple):
    ifname: str
    carrier_up: bool


_CLOSED = object()


class LinkWatcher(AsyncClosing):
    """Carrier changes of ``interfaces``; use ``async with`` and ``async for``.

    ``netns`` watches another network namespace (tests; pyroute2 opens the
    socket there).
    """

    def __init__(self, interfaces: Iterable[str], *, netns: str | None = None) -> None:
        self._names = frozenset(interfaces)
        self._netns = netns
        self._ipr: Any = None
        self._reader: asyncio.Task[None] | None = None
        self._queue: asyncio.Queue[CarrierEvent | object] = asyncio.Queue()
        self._state: dict[str, bool] = {}
        self._error: BaseException | None = None
        self._closed = False

    @property
    def interfaces(self) -> frozenset[str]:
        return self._names

    def carrier(self, ifname: str) -> bool | None:
        """The last known carrier of ``ifname`` (None before the first report)."""
        return self._state.get(ifname)

    async def open(self) -> None:
        ipr = AsyncIPRoute(groups=RTMGRP_LINK, netns=self._netns)
        try:
            await ipr.bind(groups=RTMGRP_LINK)  # subscribe before the dump: miss nothing
            seen: dict[str, bool] = {}
            async for msg in await ipr.link("dump"):
                name = msg.get_attr("IFLA_IFNAME")
                if name in self._names:
                    seen[name] = bool(msg["flags"] & IFF_LOWER_UP)
        except BaseException:
            ipr.close()
            raise
        self._ipr = ipr
        for name in sorted(self._names):
            self._report(name, seen.get(name, False))
        self._reader = asyncio.get_running_loop().create_task(self._read(), name="linkwatch-reader")

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        if self._ipr is not None:
            self._ipr.close()
        self._queue.put_nowait(_CLOSED)

    async def _enter(self) -> None:
        await self.open()

    def __aiter__(self) -> LinkWatcher:
        return self

    async def __anext__(self) -> CarrierEvent:
        item = await self._queue.get()
        if isinstance(item, CarrierEvent):
            return item
        self._queue.put_nowait(item)  # stay terminated for other consumers/calls
        if self._error is not None:
            raise self._error
        raise StopAsyncIteration

    # -- internals

    def _report(self, name: str, up: bool) -> None:
        if self._state.get(name) is up:
            return
        self._state[name] = up
        self._queue.put_nowait(CarrierEvent(name, up))

    def _handle(self, msg: Any) -> None:
        kind = msg["header"]["type"]
        if kind not in (RTM_NEWLINK, RTM_DELLINK):
            return
        name = msg.get_attr("IFLA_IFNAME")
        if name not in self._names:
            return
        up = kind == RTM_NEWLINK and bool(msg["flags"] & IFF_LOWER_UP)
        self._report(name, up)

    async def _read(self) -> None:
        try:
            while True:
                got = False
                async for msg in self._ipr.get():
                    got = True
                    self._handle(msg)
                if not got:  # pyroute2 signals a closed socket with an empty read
                    break
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("netlink link watcher failed")
            self._error = exc
        self._queue.put_nowait(_CLOSED)
