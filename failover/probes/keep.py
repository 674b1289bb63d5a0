"""What HTTP(S) probes keep between rounds (#13): one aiohttp session per (uplink
interface, target) whose connection stays open (HTTP/1.1 keep-alive), and the
addresses names resolved to over each uplink for ``ttl_s``.

A steady-state HTTPS probe is then one GET on an open TLS connection instead of a
resolution, a TCP and a TLS handshake (~2.8 ms of CPU each, 5 per second, and as
many handshakes on the gateway's health endpoint per box). Still end to end and
bound to the uplink: the connection's socket is bound to it, and a GET on a kept
connection whose path is gone times out like a fresh one; a probe cut by its deadline
closes its target's session. The owner (the engine,
``FailoverEngine.run``) calls ``close()`` when probing stops and ``drop(interface)``
when an uplink goes down.
"""

from __future__ import annotations

import asyncio
import errno
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult

from failover.probes.sockets import KeptBytes, family_of
from failover.targets import TargetKind

__all__ = ["KEPT_KINDS", "Kept", "ProbeConnections", "StaticResolver", "close_kept"]

#: The probe kinds whose connection is kept between rounds: TCP resends a lost segment on
#: it within the probe's deadline, so packet loss shows there as latency, not as a failed
#: probe (`failover.steering.loss_evidence` counts loss on the other kinds).
KEPT_KINDS = frozenset({TargetKind.HTTP, TargetKind.HTTPS})

Key = tuple[str, str]  # (interface, target text or host name)


class StaticResolver(AbstractResolver):
    """Hands aiohttp the addresses we resolved over the probed uplink (``addresses``
    is updated when they are resolved again)."""

    def __init__(self, host: str, addresses: list[str]) -> None:
        self.host = host
        self.addresses = addresses

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        if host != self.host:
            raise OSError(errno.EHOSTUNREACH, f"unexpected host {host!r}")
        return [
            ResolveResult(
                hostname=host,
                host=a,
                port=port,
                family=family_of(a),
                proto=0,
                flags=socket.AI_NUMERICHOST,
            )
            for a in self.addresses
        ]

    async def close(self) -> None:
        return None


@dataclass(frozen=True, slots=True)
class Kept:
    """One target's session on one uplink, the bytes its sockets moved, its resolver."""

    session: aiohttp.ClientSession
    sink: KeptBytes
    resolver: StaticResolver


async def close_kept(kept: Kept) -> None:
    """Close ``kept``'s connections without a TLS close_notify exchange (the path may
    be dead: a socket must not wait 30 s for the peer's), those aiohttp is closing
    already too; returns when its sockets are closed (and accounted)."""
    connector = kept.session.connector
    if connector is not None:
        await connector.close(abort_ssl=True)
    await kept.session.close()
    kept.sink.shut_down()


class ProbeConnections:
    """The kept sessions and resolved addresses of the probes of one owner."""

    def __init__(self, *, ttl_s: float = 30.0, monotonic: Callable[[], float] = time.monotonic):
        self._ttl_s = ttl_s
        self._monotonic = monotonic
        self._kept: dict[Key, Kept] = {}
        self._addresses: dict[Key, tuple[float, list[str]]] = {}
        self._closing: set[asyncio.Future[None]] = set()

    async def addresses(
        self, interface: str, host: str, resolve: Callable[[], Awaitable[list[str]]]
    ) -> list[str]:
        """``host``'s addresses over ``interface``: cached for ``ttl_s``, else ``resolve()``."""
        now = self._monotonic()
        cached = self._addresses.get((interface, host))
        if cached is not None and now < cached[0]:
            return cached[1]
        found = await resolve()
        self._addresses[(interface, host)] = (now + self._ttl_s, found)
        return found

    def kept(self, key: Key, make: Callable[[], Kept]) -> Kept:
        """The session kept for ``key`` (interface, target), made when there is none."""
        kept = self._kept.get(key)
        if kept is None or kept.session.closed:
            kept = self._kept[key] = make()
        return kept

    def forget(self, interface: str, host: str) -> None:
        """Resolve ``host`` afresh next time (a probe failed: its addresses may be stale)."""
        self._addresses.pop((interface, host), None)

    async def discard(self, key: Key, kept: Kept) -> None:
        """Close ``kept`` (``key``'s session, unless replaced since) and forget its host's
        addresses: a probe on it ran out of time."""
        self.forget(key[0], kept.resolver.host)
        if self._kept.get(key) is kept:
            del self._kept[key]
        await close_kept(kept)

    def drop(self, interface: str) -> None:
        """Forget everything of ``interface`` (it went down); the sockets close now."""
        for key in [k for k in self._addresses if k[0] == interface]:
            del self._addresses[key]
        for key in [k for k in self._kept if k[0] == interface]:
            closing = asyncio.ensure_future(close_kept(self._kept.pop(key)))
            self._closing.add(closing)
            closing.add_done_callback(self._closing.discard)

    async def close(self) -> None:
        """Close every kept session (the owner stops probing)."""
        for interface in {k[0] for k in self._kept}:
            self.drop(interface)
        self._addresses.clear()
        await asyncio.gather(*self._closing, return_exceptions=True)
