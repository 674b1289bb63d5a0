"""Shared netlink reads: within one `shared_reads()` scope, each rtnetlink dump (of one
namespace, with one filter) is read from the kernel once and its messages handed to
every reader, whichever `failover.routes_netlink.Netlink` socket asks.

Why: the engine's maintenance pass (every 10 s) reads the kernel for the routes
(`ensure_present`), the sticky tables (`sticky.sync`: its tables and rules, then the
main table again) and each usable uplink's addresses (conntrack), each through its own
socket: ~16 dumps a pass, whose pyroute2 decoding was a quarter of the idle daemon's CPU
while probing (issue #13's idle target, BENCHMARKS.md). Within a pass they are one
moment's state read 6 times over; shared, they are read once.

What keeps it the same state: the scope is a `ContextVar`, so only the task that opened
it (and the tasks it starts) share; a switch running beside it in another task reads the
kernel as before. Any write through any `Netlink` (a route, a rule) bumps `writes()`, and
a dump read before it is read again: the pass sees its own writes and a concurrent
switch's. A change by another process (DHCP, the modem) in the milliseconds of a pass is
seen as if it came just after it, at the next pass, as one between two passes is.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

__all__ = ["Key", "bump_writes", "shared", "shared_reads", "writes"]

#: (namespace, dump kind, sorted filter items): what identifies one dump.
Key = tuple[Any, ...]
_SHARED: ContextVar[dict[Key, tuple[int, list[Any]]] | None] = ContextVar(
    "failover_netlink_shared_reads", default=None)
_writes = [0]


def writes() -> int:
    """How many netlink writes this process has started and finished (a generation)."""
    return _writes[0]


def bump_writes() -> None:
    """Note a write (called before and after one: a dump read while it runs is stale)."""
    _writes[0] += 1


def shared() -> dict[Key, tuple[int, list[Any]]] | None:
    """The current scope's dumps by key, with the write generation each was read at;
    None outside a scope (every dump goes to the kernel)."""
    return _SHARED.get()


@contextmanager
def shared_reads() -> Iterator[None]:
    """Share dumps until the block ends (nested scopes share the outer one's)."""
    if _SHARED.get() is not None:
        yield
        return
    token = _SHARED.set({})
    try:
        yield
    finally:
        _SHARED.reset(token)
