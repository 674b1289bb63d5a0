"""The HTTP(S) probe: a GET through one uplink, 2xx is an answer that the target is
up. With ``ProbeOptions.connections`` the connection is kept between probes
(``probes.keep``, #13); without, every probe connects afresh and closes."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import aiohttp

from failover.probes.dns import resolve_kept
from failover.probes.failures import ProbeFailed
from failover.probes.keep import Kept, StaticResolver, close_kept
from failover.probes.options import ProbeOptions
from failover.probes.retry import Attempts, hedged
from failover.probes.sockets import KeptBytes, accounting_socket
from failover.targets import ProbeTarget, TargetKind

__all__ = ["KEEPALIVE_S", "probe_http"]

#: How long an idle kept connection stays open (aiohttp closes it after). Rounds come
#: every 0.2-0.5 s; a slower standby round connects afresh rather than trusting a
#: connection a carrier's NAT may have forgotten.
KEEPALIVE_S = 15.0


def _new_kept(
    target: ProbeTarget, interface: str, options: ProbeOptions, addresses: list[str]
) -> Kept:
    """A session whose sockets are bound to ``interface`` and counted in its sink."""
    sink = KeptBytes()
    resolver = StaticResolver(target.host, addresses)

    def factory(addr_info: Any) -> socket.socket:
        family, type_, proto = addr_info[0], addr_info[1], addr_info[2]
        return accounting_socket(family, type_, proto, interface, sink)

    connector = aiohttp.TCPConnector(
        socket_factory=factory,
        resolver=resolver,
        ssl=options.ssl if target.kind is TargetKind.HTTPS else False,
        keepalive_timeout=KEEPALIVE_S,
        use_dns_cache=False,
        happy_eyeballs_delay=None,
    )
    session = aiohttp.ClientSession(
        connector=connector,
        timeout=aiohttp.ClientTimeout(total=None),
        headers={"User-Agent": options.user_agent},
        skip_auto_headers=("Accept-Encoding",),
    )
    return Kept(session, sink, resolver)


async def _get(session: aiohttp.ClientSession, url: str, options: ProbeOptions) -> None:
    """One GET. aiohttp sends it again once on a fresh connection when a kept one turns
    out closed or reset (the server or a middlebox ended it while idle: no answer about
    the target), and closes a connection whose request failed: the next probe
    connects afresh."""
    async with session.get(url, allow_redirects=False) as resp:
        await resp.content.read(options.http_max_body)
        if not 200 <= resp.status < 300:
            raise ProbeFailed(f"HTTP {resp.status}")


async def probe_http(
    target: ProbeTarget, interface: str, options: ProbeOptions, wire: list[int],
    tally: Attempts | None = None,
) -> None:
    """GET ``target.url`` through ``interface``; hedged attempts may open more
    connections. A failed probe forgets the addresses its name resolved to; one cut
    by its deadline also closes its target's kept session at once (aiohttp would
    close the connection with a TLS close_notify, and wait 30 s for the peer's on a
    dead path)."""
    assert target.url is not None
    url: str = target.url
    addresses = await resolve_kept(target.host, interface, options, wire)
    owner = options.connections
    key = (interface, target.text)
    if owner is None:
        kept = _new_kept(target, interface, options, addresses)
    else:
        kept = owner.kept(key, lambda: _new_kept(target, interface, options, addresses))
        kept.resolver.addresses = addresses
    try:
        await hedged(lambda: _get(kept.session, url, options), options.attempts,
                     options.retry_after_s, tally)
    except asyncio.CancelledError:
        if owner is not None:  # the deadline: the path may be dead; no TLS goodbye
            await owner.discard(key, kept)
        raise
    except BaseException:
        if owner is not None:
            owner.forget(interface, target.host)
        raise
    finally:
        if owner is None:
            await close_kept(kept)
        sent, received = kept.sink.take()
        wire[0] += sent
        wire[1] += received
