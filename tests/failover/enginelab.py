"""The failover engine in a shop of namespaces: real probes, routes, nftables, conntrack.

Shared by tests/failover/test_engine_netns.py and benchmarks/bench_failover.py.

The shop is `tests.failover.conftest.build_shop` (box with wan0, wwan0, lan0; an ISP
namespace per uplink; the internet). The probe targets live in the internet namespace
(`tests.failover.netlab.start_services`): TCP 198.51.100.10:7000, a DNS responder on
198.51.100.53 and ICMP to 198.51.100.10 -- quorum 2 of 3, as in production. The LAN
client (`LanClient`) opens a connection to the payment gateway's echo server every
`period_s` without waiting for the previous one, reads the greeting (which names the
source address the server saw: the uplink it came through), echoes a line and closes.

LAN flows are sticky (`failover.sticky`: the flow marks of `failover.nft` and the
policy routes), as in the daemon; `running_engine(..., sticky=False)` leaves the policy
routes out (the marks are then inert), to compare.

Faults are made at the ISP side (`blackhole`, `random_loss`: nftables in the ISP
namespace; link down: the ISP's end of the veth) or in the internet (the DNS target).
"""

from __future__ import annotations

import asyncio
import socket
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from failover.config import MonitorConfig, SelectorConfig
from failover.conntrack import ConntrackFlusher
from failover.engine import EngineConfig, FailoverEngine, ProbeRound
from failover.link import LinkStatus, Transition, TransitionKind
from failover.nft import LanForwarding
from failover.probes.accounting import ByteCounter
from failover.probes.options import ProbeOptions
from failover.routes import (
    MetricScheme,
    RouteController,
    RouteProblem,
    SwitchReport,
    Uplink,
    UplinkName,
)
from failover.steering import Steering
from failover.sticky import StickyRoutes
from failover.targets import parse_targets
from lab.faults import heal
from lab.shop import recv_line
from tests.failover.conftest import GATEWAY_IP, LTE_ADDR, PORT, WIRED_ADDR, Shop, ipn
from tests.failover.netlab import (
    RESOLVER,
    SERVER,
    TCP_PORT,
    TLS_NAME,
    Pki,
    make_pki,
    nft,
    start_services,
    stop_services,
)
from tests.support.netns import inside

UPLINKS = [Uplink("wired", "wan0"), Uplink("lte", "wwan0")]
TARGETS = parse_targets([f"tcp:{SERVER}:{TCP_PORT}", f"dns:{RESOLVER}:{TLS_NAME}",
                         f"icmp:{SERVER}"])
SOURCES = {WIRED_ADDR: "wired", LTE_ADDR: "lte"}
# Production defaults, except the recovery windows (30 s) shortened for the tests.
MONITOR = MonitorConfig(stable_s=3.0)
SELECTOR = SelectorConfig(failback_stable_s=3.0)

_pki: Pki | None = None


def pki() -> Pki:
    global _pki
    if _pki is None:
        _pki = make_pki()
    return _pki


# --------------------------------------------------------------------------- faults


clear_faults = heal  # drops `blackhole`, `random_loss` and `kill_dns` alike


def kill_dns(internet: str) -> None:
    """The DNS target stops answering (over both uplinks); everything else works."""
    nft(internet, f"""
        table inet sbxlab {{
          chain in {{ type filter hook prerouting priority -300; policy accept;
            ip daddr {RESOLVER} udp dport 53 counter drop
          }}
        }}
        """)


def set_link(ns: str, ifname: str, up: bool) -> None:
    ipn(ns, "link", "set", ifname, "up" if up else "down")


# --------------------------------------------------------------------------- LAN client


@dataclass(frozen=True)
class Request:
    started: float
    finished: float
    source: str | None  # the box address the server saw (which uplink carried it)
    error: str | None

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def uplink(self) -> str | None:
        return SOURCES.get(self.source or "")


@dataclass
class LanClient:
    """Requests from the LAN client namespace to the gateway, one every `period_s`."""

    ns: str
    period_s: float = 0.05
    timeout_s: float = 1.0
    host: str = GATEWAY_IP
    port: int = PORT
    requests: list[Request] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        async with asyncio.TaskGroup() as tg:
            next_at = loop.time()
            while True:
                tg.create_task(self._one())
                next_at += self.period_s
                await asyncio.sleep(max(0.0, next_at - loop.time()))

    async def _one(self) -> None:
        loop = asyncio.get_running_loop()
        with inside(self.ns):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        started = time.monotonic()
        source: str | None = None
        error: str | None = None
        try:
            async with asyncio.timeout(self.timeout_s):
                await loop.sock_connect(s, (self.host, self.port))
                source = (await recv_line(s, "greeting")).decode().strip()
                await loop.sock_sendall(s, b"ping\n")
                await recv_line(s, "echo")
        except TimeoutError:
            error = f"no answer within {self.timeout_s} s"
        except OSError as exc:
            error = f"{type(exc).__name__}: {exc}"
        finally:
            s.close()
        self.requests.append(Request(started, time.monotonic(), source, error))
        self.changed.set()

    def first_via(self, uplink: str, after: float) -> Request | None:
        """The first request started after `after` that went through `uplink`."""
        for r in sorted(self.requests, key=lambda r: r.finished):
            if r.started >= after and r.ok and r.uplink == uplink:
                return r
        return None

    def between(self, start: float, end: float) -> list[Request]:
        """Requests started in [start, end)."""
        return [r for r in self.requests if start <= r.started < end]

    async def wait_via(self, uplink: str, after: float, timeout: float) -> Request:
        async with asyncio.timeout(timeout):
            while (found := self.first_via(uplink, after)) is None:
                self.changed.clear()
                await self.changed.wait()
        return found

    async def wait_done(self, until: float, timeout: float = 3.0) -> None:
        """Until every request started before `until` has finished."""
        async with asyncio.timeout(timeout):
            while not any(r.started >= until for r in self.requests):
                self.changed.clear()
                await self.changed.wait()


async def echo(s: socket.socket, timeout: float = 3.0) -> bytes:
    """One line echoed over `s` (a connection from `connect`), without blocking the loop."""
    loop = asyncio.get_running_loop()
    s.setblocking(False)
    async with asyncio.timeout(timeout):
        await loop.sock_sendall(s, b"ping\n")
        return await loop.sock_recv(s, 64)


# --------------------------------------------------------------------------- switch timing


@dataclass
class SwitchLog:
    """When route control started moving routes and when the LAN forwarding followed."""

    events: list[tuple[float, str, str | None]] = field(default_factory=list)

    def add(self, what: str, uplink: str | None) -> None:
        self.events.append((time.monotonic(), what, uplink))

    def window(self, uplink: str, after: float) -> tuple[float, float]:
        """[routes start moving to `uplink`, the LAN forwarding for it is in place]: the
        span in which `switch_uplink` has moved the routes but the nft ruleset still
        names the old uplink (new LAN connections are rejected)."""
        start = next(t for t, w, u in self.events
                     if t >= after and w == "routes-start" and u == uplink)
        end = next(t for t, w, u in self.events
                   if t >= start and w == "forwarding-done" and u == uplink)
        return start, end


class TimedRoutes:
    """A RouteController that records when activations start (delegates everything)."""

    def __init__(self, inner: RouteController, log: SwitchLog) -> None:
        self.inner = inner
        self.log = log
        self.backend: str = inner.backend
        self.uplinks: Mapping[UplinkName, Uplink] = inner.uplinks
        self.metrics: MetricScheme = inner.metrics

    async def activate(self, uplink: UplinkName) -> None:
        self.log.add("routes-start", uplink)
        await self.inner.activate(uplink)

    async def deactivate_all(self) -> None:
        self.log.add("routes-start", None)
        await self.inner.deactivate_all()

    async def ensure_present(self, uplinks: Iterable[UplinkName]) -> list[RouteProblem]:
        return await self.inner.ensure_present(uplinks)

    async def describe(self) -> dict[str, Any]:
        return await self.inner.describe()

    async def close(self) -> None:
        await self.inner.close()


class TimedFlusher:
    """A ConntrackFlusher that logs each flush ("flushed", interface) and says so."""

    def __init__(self, inner: ConntrackFlusher, log: SwitchLog,
                 notify: Callable[[], None]) -> None:
        self.inner = inner
        self.log = log
        self.notify = notify

    async def flush_uplink(self, interface: str) -> Any:
        result = await self.inner.flush_uplink(interface)
        self.log.add("flushed", interface)
        self.notify()
        return result

    async def addresses_of(self, interface: str) -> Any:
        return await self.inner.addresses_of(interface)


class TimedForwarding:
    def __init__(self, inner: LanForwarding, log: SwitchLog) -> None:
        self.inner = inner
        self.log = log

    async def apply(self, active: UplinkName | None, also: Sequence[UplinkName] = ()) -> None:
        await self.inner.apply(active, also)
        if not also:
            self.log.add("forwarding-done", active)


# --------------------------------------------------------------------------- the engine


@dataclass
class Harness:
    shop: Shop
    engine: FailoverEngine
    client: LanClient
    counter: ByteCounter
    switch_log: SwitchLog
    sticky: StickyRoutes | None = None
    transitions: list[tuple[float, Transition, SwitchReport]] = field(default_factory=list)
    links: list[tuple[float, UplinkName, LinkStatus]] = field(default_factory=list)
    errors: list[BaseException] = field(default_factory=list)
    rounds: dict[str, list[tuple[float, ProbeRound]]] = field(
        default_factory=lambda: {"wired": [], "lte": []})
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def on_transition(self, t: Transition, report: SwitchReport) -> None:
        self.transitions.append((time.monotonic(), t, report))
        self.changed.set()

    def on_link(self, name: UplinkName, status: LinkStatus) -> None:
        self.links.append((time.monotonic(), name, status))
        self.changed.set()

    def on_error(self, exc: BaseException) -> None:
        self.errors.append(exc)
        self.changed.set()

    def on_round(self, name: UplinkName, outcome: ProbeRound) -> None:
        self.rounds[name].append((time.monotonic(), outcome))
        self.changed.set()

    async def wait_for(self, predicate: Callable[[], bool], timeout: float) -> None:
        """Until `predicate` holds; re-checked on every engine callback."""
        async with asyncio.timeout(timeout):
            while not predicate():
                self.changed.clear()
                await self.changed.wait()

    async def wait_transition(self, kind: TransitionKind, timeout: float,
                              after: float | None = None) -> tuple[float, Transition]:
        """The first transition of `kind` applied after `after` (default: now)."""
        since = time.monotonic() if after is None else after

        def found() -> list[tuple[float, Transition]]:
            return [(at, t) for at, t, _ in self.transitions if at >= since and t.kind is kind]

        await self.wait_for(lambda: bool(found()), timeout)
        return found()[0]

    async def wait_rounds(self, name: str, count: int, timeout: float) -> list[ProbeRound]:
        """Wait for `count` more completed rounds on `name`; returns them."""
        start = len(self.rounds[name])
        await self.wait_for(lambda: len(self.rounds[name]) >= start + count, timeout)
        return [o for _, o in self.rounds[name][start:start + count]]

    def flushed(self, interface: str, after: float) -> bool:
        """Whether `interface`'s connections were flushed after `after`."""
        return any(t >= after and w == "flushed" and u == interface
                   for t, w, u in self.switch_log.events)

    def kinds(self, after: float = 0.0) -> list[TransitionKind]:
        return [t.kind for at, t, _ in self.transitions if at >= after]


@asynccontextmanager
async def running_engine(shop: Shop, routes: RouteController, *,
                         client_period_s: float = 0.05, sticky: bool = True,
                         steering: Steering | None = None,
                         **engine_kwargs: Any) -> AsyncIterator[Harness]:
    """Services, the engine (real everything) and the LAN client, running; booted on
    wired with the LAN going out through it. `steering`: the engine's (its rules are
    removed on exit)."""
    ipn(shop.internet, "addr", "add", f"{RESOLVER}/32", "dev", "lo")
    lan = LanForwarding(lan_interfaces=["lan0"], uplinks=UPLINKS, netns=shop.box)
    flusher = ConntrackFlusher(netns=shop.box)
    pinning = StickyRoutes(UPLINKS, netns=shop.box) if sticky else None
    counter = ByteCounter()
    with tempfile.TemporaryDirectory() as tmp:
        server_ssl = pki().server_context(tmp)
        _, handles = await start_services(shop.internet, server_ssl)
    try:
        with inside(shop.box):  # the probes' sockets are created in the box
            client = LanClient(shop.client, period_s=client_period_s)
            kwargs: dict[str, Any] = {
                "monitor": MONITOR, "selector": SELECTOR,
                "probe_options": ProbeOptions(dns_servers=()),
                "maintenance_interval_s": 2.0, "netns": shop.box, **engine_kwargs}
            harness: Harness
            switch_log = SwitchLog()
            engine = FailoverEngine(
                UPLINKS, TARGETS, TimedRoutes(routes, switch_log), EngineConfig(**kwargs),
                forwarding=TimedForwarding(lan, switch_log),
                conntrack=TimedFlusher(flusher, switch_log, lambda: harness.changed.set()),
                sticky=pinning, counter=counter, steering=steering,
                on_transition=lambda t, r: harness.on_transition(t, r),
                on_link=lambda n, s: harness.on_link(n, s),
                on_error=lambda e: harness.on_error(e),
                on_round=lambda n, o: harness.on_round(n, o))
            harness = Harness(shop, engine, client, counter, switch_log, pinning)
            async with asyncio.TaskGroup() as tg:
                tasks = [tg.create_task(engine.run(), name="engine"),
                         tg.create_task(client.run(), name="lan-client")]
                try:
                    await harness.wait_transition(TransitionKind.RECOVERED, 5.0, after=0.0)
                    await harness.wait_for(
                        lambda: engine.links()["lte"].known, 5.0)
                    await client.wait_via("wired", time.monotonic(), 5.0)
                    yield harness
                finally:
                    for task in tasks:
                        task.cancel()
    finally:
        if steering is not None:
            await steering.remove()
        await stop_services(handles)
        await flusher.close()
        if pinning is not None:
            await pinning.remove()
            await pinning.close()
