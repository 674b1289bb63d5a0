"""Composes the shop LAN's DHCP and DNS: dnsmasq, configured and supervised by storebox.

dnsmasq (`firmware.lan.dnsmasq`) runs as a child of the daemon, in the foreground; when
it exits the component raises and the daemon's `Supervisor` restarts it with backoff
(the lease file stays, so the LAN keeps its addresses). Its upstream follows the
failover engine: the failover component calls `follow` on every transition
(`firmware.daemon.compose` hands it over), and the servers file is rewritten and
dnsmasq told with SIGHUP, which keeps every lease. Before the engine's first decision
the LAN forwards to wired's resolvers (the uplink the box prefers); in offline mode the
last upstream stays (nothing answers anyway, and the cache still does). Every few
seconds the component re-reads the uplink's resolvers (`firmware.uplink_dns`, the
probes' too: NetworkManager's, which a DHCP renewal may change, and the modem's, the LTE
data call's, `modem.dns` in the state), asks the uplink's own
resolvers whether they answer (`firmware.lan.resolvers`: while none does, the fallback
goes first) and counts the leases for the status.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import signal
import time
from collections.abc import Awaitable, Callable

from firmware.components.context import BoxContext
from firmware.config import Config
from firmware.lan.dnsmasq import DnsmasqExited, LanFiles, count_leases, render_conf, render_servers
from firmware.lan.resolvers import Upstream, answering, upstream_for
from firmware.state import BoxState
from firmware.uplink_dns import Uplink, UplinkResolvers

__all__ = ["LanServices", "build_lan_services"]

log = logging.getLogger("storebox.lan")

#: Seconds between re-reads of the learnt resolvers and of the lease file.
REFRESH_S = 5.0
STOP_TIMEOUT_S = 3.0


class LanServices:
    """dnsmasq for the LAN, its upstream the active uplink's resolvers."""

    name = "lan"

    def __init__(self, config: Config, state: BoxState, files: LanFiles, *,
                 resolvers: UplinkResolvers | None = None,
                 check: Callable[[tuple[str, ...], str], Awaitable[bool]] = answering,
                 program: str = "dnsmasq",
                 refresh_s: float = REFRESH_S,
                 wall: Callable[[], float] = time.time) -> None:
        self.config = config
        self.state = state
        self.files = files
        self._resolvers = resolvers if resolvers is not None else UplinkResolvers(config,
                                                                                  state)
        self._check = check
        self._program = program
        self._refresh_s = refresh_s
        self._wall = wall
        self._uplink: str = "wired"
        self._changed = asyncio.Event()
        self._servers_text: str | None = None
        self._tail: list[str] = []

    def follow(self, uplink: str) -> None:
        """The failover component's hook: `uplink` ("wired", "lte", "none") is active now."""
        if uplink in ("wired", "lte") and uplink != self._uplink:
            self._uplink = uplink
            self._changed.set()

    async def run(self) -> None:
        self.files.write(self.files.conf, render_conf(self.config, self.files))
        self._servers_text = None
        await self._write_servers(await self._upstream())
        proc = await asyncio.create_subprocess_exec(
            *self.files.argv(self._program), stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
        log.info("dnsmasq serving %s (pid %d)", ", ".join(self.config.routing.lan_interfaces),
                 proc.pid)
        assert proc.stderr is not None
        pump = asyncio.create_task(self._pump(proc.stderr), name="lan-dnsmasq-log")
        follow = asyncio.create_task(self._follow(proc), name="lan-follow")
        exited = asyncio.create_task(proc.wait(), name="lan-dnsmasq-wait")
        try:
            await asyncio.wait({follow, exited}, return_when=asyncio.FIRST_COMPLETED)
            if follow.done():
                follow.result()  # a bug in following: raise it (the supervisor restarts)
        finally:
            for task in (follow, exited):
                task.cancel()
            await _stop(proc)
            with contextlib.suppress(asyncio.CancelledError):
                await pump
        raise DnsmasqExited(proc.returncode if proc.returncode is not None else -1,
                            " | ".join(self._tail[-5:]))

    async def _follow(self, proc: asyncio.subprocess.Process) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._refresh_s):
                    await self._changed.wait()
            self._changed.clear()
            if await self._write_servers(await self._upstream()):
                proc.send_signal(signal.SIGHUP)  # re-reads the servers, keeps the leases
            self.state.update(self.state.lan, leases=count_leases(self.files.leases,
                                                                  self._wall()))

    async def _upstream(self) -> Upstream:
        uplink: Uplink = "lte" if self._uplink == "lte" else "wired"
        resolvers = self._resolvers
        await resolvers.refresh()  # NetworkManager's, when they are old (a DHCP renewal)
        upstream = upstream_for(self.config, uplink, resolvers.learnt(uplink),
                                resolvers.modem())
        if upstream.fallback and not await self._check(upstream.own, upstream.interface):
            upstream = dataclasses.replace(upstream, own_answering=False)
        return upstream

    async def _write_servers(self, upstream: Upstream) -> bool:
        """Write the servers file when it changes; True when it did (and was running)."""
        text = render_servers(upstream)
        if text == self._servers_text:
            return False
        first = self._servers_text is None
        self.files.write(self.files.servers, text)
        self._servers_text = text
        lan = self.state.lan
        if (lan.upstream_uplink, lan.upstream_servers) != (upstream.uplink,
                                                          list(upstream.servers)):
            log.info("LAN DNS forwards to %s's resolvers: %s", upstream.uplink,
                     ", ".join(upstream.servers) or "none known")
            self.state.update(lan, upstream_uplink=upstream.uplink,
                              upstream_interface=upstream.interface,
                              upstream_servers=list(upstream.servers),
                              since=self.state.wall())
        return not first

    async def _pump(self, stream: asyncio.StreamReader) -> None:
        """dnsmasq's log lines into ours (the last few kept for the crash report)."""
        async for raw in stream:
            line = raw.decode(errors="replace").rstrip()
            self._tail = [*self._tail[-19:], line]
            log.info("dnsmasq: %s", line)


async def _stop(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is not None:
        return
    proc.terminate()
    try:
        async with asyncio.timeout(STOP_TIMEOUT_S):
            await proc.wait()
    except TimeoutError:
        proc.kill()
        await proc.wait()


async def build_lan_services(context: BoxContext, *,
                             resolvers: UplinkResolvers) -> LanServices | None:
    """The LAN's DHCP and DNS when `lan.enabled`, forwarding to the active uplink's
    `resolvers` (`firmware.uplink_dns`, shared with the probes)."""
    config = context.config
    lan = context.state.lan
    context.state.update(lan, enabled=config.lan.enabled,
                         interfaces=list(config.routing.lan_interfaces),
                         dhcp=config.lan.enabled and bool(config.lan.dhcp_ranges))
    if not config.lan.enabled:
        return None
    return LanServices(config, context.state, LanFiles.under(config.device.state_dir),
                       resolvers=resolvers)
