"""Unsolicited result codes: which lines are URCs, and who gets them.

`AtChannel` decides per line whether it belongs to the outstanding command or is
unsolicited (the routing rule is in `hw.modem.channel`'s docstring); a URC then goes to
the `UrcSubscribers` of the channel: bounded async iterators (`Subscription`) and
synchronous callbacks, each with the prefixes it wants (None: every unsolicited line).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from typing import Any

from hw.modem.errors import PortClosed

__all__ = [
    "ALWAYS_URC",
    "DEFAULT_URC_PREFIXES",
    "Subscription",
    "Urc",
    "UrcCallback",
    "UrcSubscribers",
]

log = logging.getLogger(__name__)

#: Lines that are unsolicited whatever command is outstanding.
ALWAYS_URC: frozenset[str] = frozenset({"RDY", "POWERED DOWN", "NORMAL POWER DOWN"})

#: URC prefixes of a Quectel EC25 (and 3GPP TS 27.007 generic ones).
DEFAULT_URC_PREFIXES: frozenset[str] = frozenset(
    {
        *ALWAYS_URC,
        "+CFUN:",
        "+CPIN:",
        "+QUSIM:",
        "+QIND:",
        "+CREG:",
        "+CGREG:",
        "+CEREG:",
        "+C5GREG:",
        "+CGEV:",
        "+QNETDEVSTATUS:",
        "+QSIMSTAT:",
        "+CTZE:",
        "+CTZV:",
        "+QIURC:",
        "+CMTI:",
        "+CMT:",
        "+CDS:",
        "+CUSD:",
        "RING",
        "+CRING:",
        "+CLIP:",
        "+QSTAT:",
        "SMS DONE",
        "PB DONE",
    }
)


@dataclass(frozen=True, slots=True)
class Urc:
    """An unsolicited line. `prefix` is the configured prefix it matched (None: unknown)."""

    line: str
    prefix: str | None
    received_at: float


class Subscription:
    """URCs matching `prefixes` (None: every unsolicited line), as an async iterator.

    Bounded: when `maxsize` URCs are waiting the oldest is dropped (`dropped` counts).
    Iteration ends when the subscription or the channel is closed; it raises
    `PortClosed` when the port failed. Use as a (sync or async) context manager, or call
    `close()`.
    """

    def __init__(
        self, url: str, prefixes: frozenset[str] | None, maxsize: int,
        unsubscribe: Callable[[Subscription], None],
    ) -> None:
        self._url = url
        self._unsubscribe = unsubscribe
        self.prefixes = prefixes
        self._maxsize = maxsize
        self._queue: deque[Urc] = deque()
        self._changed = asyncio.Event()  # set by push() and end()
        self._ended = False
        self._error: BaseException | None = None
        self.dropped = 0

    def matches(self, line: str) -> bool:
        return self.prefixes is None or any(line.startswith(p) for p in self.prefixes)

    def push(self, urc: Urc) -> None:
        """Queue `urc` (the channel's reader does; the oldest is dropped when full)."""
        if self._ended:
            return
        if len(self._queue) >= self._maxsize:
            self._queue.popleft()
            self.dropped += 1
        self._queue.append(urc)
        self._changed.set()

    def end(self, error: BaseException | None = None) -> None:
        """No more URCs: iteration ends (raising `error`, when given, once drained)."""
        if not self._ended:
            self._ended = True
            self._error = error
        self._changed.set()

    def get_nowait(self) -> Urc | None:
        """The oldest waiting URC, or None."""
        return self._queue.popleft() if self._queue else None

    async def get(self) -> Urc:
        """The next URC; raises `PortClosed` when none can come any more."""
        while not self._queue:
            if self._ended:
                if self._error is not None:
                    raise self._error
                raise PortClosed(self._url, "subscription closed")
            self._changed.clear()
            await self._changed.wait()
        return self._queue.popleft()

    def __aiter__(self) -> AsyncIterator[Urc]:
        return self

    async def __anext__(self) -> Urc:
        if not self._queue and self._ended and self._error is None:
            raise StopAsyncIteration
        return await self.get()

    def close(self) -> None:
        self._unsubscribe(self)
        self.end()

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> Subscription:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()


UrcCallback = Callable[[Urc], Any]


class UrcSubscribers:
    """The subscriptions and callbacks of the channel on `url`, and delivery to them."""

    def __init__(self, url: str) -> None:
        self._url = url
        self._subscriptions: list[Subscription] = []
        self._callbacks: list[tuple[frozenset[str] | None, UrcCallback]] = []

    def new(self, prefixes: Iterable[str] | None, maxsize: int) -> Subscription:
        """A subscription to URCs starting with any of `prefixes` (None: all of them), not
        yet receiving: `add()` it (or end it, when the channel is closed)."""
        if maxsize < 1:
            raise ValueError(f"maxsize must be at least 1, not {maxsize!r}")
        wanted = None if prefixes is None else frozenset(prefixes)
        return Subscription(self._url, wanted, maxsize, self._unsubscribe)

    def add(self, sub: Subscription) -> None:
        self._subscriptions.append(sub)

    def _unsubscribe(self, sub: Subscription) -> None:
        with contextlib.suppress(ValueError):
            self._subscriptions.remove(sub)

    def add_callback(
        self, callback: UrcCallback, prefixes: Iterable[str] | None = None
    ) -> Callable[[], None]:
        """Call `callback(urc)` for matching URCs; returns a function that removes it."""
        entry = (None if prefixes is None else frozenset(prefixes), callback)
        self._callbacks.append(entry)

        def remove() -> None:
            with contextlib.suppress(ValueError):
                self._callbacks.remove(entry)

        return remove

    def deliver(self, urc: Urc) -> None:
        """`urc` to every subscription and callback that wants it (a line of unknown
        prefix only to catch-all subscriptions); a failing callback is logged."""
        text = urc.line
        for sub in self._subscriptions:
            if sub.matches(text) and (urc.prefix is not None or sub.prefixes is None):
                sub.push(urc)
        for wanted, callback in list(self._callbacks):
            if wanted is None or any(text.startswith(p) for p in wanted):
                try:
                    callback(urc)
                except Exception:
                    log.exception("URC callback failed for %r", text)

    def end_all(self, error: BaseException | None) -> None:
        """End every subscription (with `error`, the port's failure, if any)."""
        for sub in list(self._subscriptions):
            sub.end(error)
        self._subscriptions.clear()
