"""Plays the outage drill: build the shop, start the box, sell, break things, report.

Everything runs on one event loop. The loop's thread lives in the LAN client's namespace
while the POS sells (its sockets are the LAN's); the gateway simulator's listening socket
is made inside the internet's namespace; the box's status is read over its unix admin
socket, which works from any namespace.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import aiohttp

from firmware.fleet.topics import EVENT_KINDS
from lab import faults
from lab.box import BoxDaemon, SealKeyPair, new_secret, write_config, write_seal_keys
from lab.drill import live
from lab.drill.brownout import steer_limit_s
from lab.drill.config import API_PORT, DEVICE_ID, GATEWAY_PORT, drill_config
from lab.drill.observed import PlayedPhase, Sample
from lab.drill.report import Arrival, Report, build_report, render
from lab.drill.timeline import Faults, Options, Phase, plan
from lab.errors import DrillError
from lab.fleet import FleetBroker
from lab.gateway_sim import DeclineRules, GatewaySimulator
from lab.netns import inside
from lab.pos import DECLINED_AMOUNT, Terminals
from lab.shop import GATEWAY_IP, LAN_BOX, LAN_CLIENT, OTHER_IP, Shop, build_shop, route_dev
from payments_cache.sealing import SealOpener

TOOLS = ("ip", "nft", "conntrack")
POLL_S = 0.1


@contextlib.contextmanager
def _logs_to(path: Path, name: str) -> Iterator[None]:
    """Send logger `name` (the in-process gateway simulator) to `path`, not the screen."""
    logger = logging.getLogger(name)
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    saved = logger.propagate
    logger.addHandler(handler)
    logger.propagate = False
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.propagate = saved
        handler.close()


def preflight() -> None:
    """What the drill needs from this machine; DrillError telling what is missing."""
    if os.geteuid() != 0:
        raise DrillError("preflight", (
            "the drill builds network namespaces, veth pairs and nftables rules, which "
            "needs root. Run it as root (sudo make run, or sudo storebox drill). Without "
            "root you can still run the parts: `python -m lab.gateway_sim`, "
            "`python -m hw.modem.simulator` and `storebox run --config` with "
            "routing.backend = \"none\" (what `make box` does)"))
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        raise DrillError("preflight", f"missing {', '.join(missing)} (Debian packages "
                         "iproute2, nftables, conntrack; `make deps` installs them)")


@dataclass
class Observer:
    """Polls the box's status; keeps the latest, the active-uplink samples and every
    event once (by sequence number)."""

    socket_path: Path
    token: str
    latest: dict[str, Any] | None = None
    samples: list[Sample] = field(default_factory=list)
    events: dict[int, dict[str, Any]] = field(default_factory=dict)

    async def run(self) -> None:
        connector = aiohttp.UnixConnector(path=str(self.socket_path))
        timeout = aiohttp.ClientTimeout(total=2.0)
        headers = {"Authorization": f"Bearer {self.token}"}
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            while True:
                try:
                    async with session.get("http://box/v1/status", headers=headers) as r:
                        if r.status == 200:
                            self.note(await r.json(), time.monotonic())
                except (aiohttp.ClientError, TimeoutError, OSError):
                    pass  # the box is busy or restarting: the next poll tells
                await asyncio.sleep(POLL_S)

    def note(self, doc: dict[str, Any], at: float) -> None:
        self.latest = doc
        self.samples.append(Sample(at, str(doc.get("uplink", {}).get("active", "none"))))
        for event in doc.get("recent_events", []):
            if isinstance(event.get("seq"), int):
                self.events.setdefault(event["seq"], event)

    def ordered_events(self) -> list[dict[str, Any]]:
        return [self.events[k] for k in sorted(self.events)]

    async def until(self, check: Callable[[dict[str, Any]], bool], within_s: float) -> bool:
        """Whether the status satisfies `check` within `within_s` seconds."""
        deadline = time.monotonic() + within_s
        while time.monotonic() < deadline:
            if self.latest is not None and check(self.latest):
                return True
            await asyncio.sleep(POLL_S)
        return False


def _on_wired(doc: dict[str, Any]) -> bool:
    return bool(doc.get("uplink", {}).get("active") == "wired")


def _recovered(doc: dict[str, Any]) -> bool:
    return _on_wired(doc) and doc.get("payments", {}).get("queued") == 0


def _steered(doc: dict[str, Any]) -> bool:
    return bool((doc.get("uplink", {}).get("steer") or {}).get("steered"))


def _unsteered(doc: dict[str, Any]) -> bool:
    return not _steered(doc)


#: what ends a phase early (`timeline.UNTIL_PHASES`): the box got where it should
_UNTIL: dict[str, Callable[[dict[str, Any]], bool]] = {"unsteer": _unsteered,
                                                       "recovery": _recovered}


def steer_routes(box: str) -> dict[str, str]:
    """The routes that show a steer (`brownout.STEERED_ROUTES`): the box's own connections
    to the gateway, and the shop's LAN traffic forwarded by the box (failover/steering.py:
    `iif lo` rules)."""
    lan = ("from", LAN_CLIENT, "iif", "lan0")
    return {"box_to_gateway": route_dev(box, GATEWAY_IP),
            "shop_to_gateway": route_dev(box, GATEWAY_IP, *lan),
            "shop_to_internet": route_dev(box, OTHER_IP, *lan)}


async def _fleet_caught_up(fleet: FleetBroker, observer: Observer, within_s: float) -> bool:
    """Whether, within `within_s`, the fleet server has seen the box online again, back
    on its active uplink, with every event of the fleet's kinds the box emitted (those of
    the outage arrive late)."""
    # matched by kind and time: the fleet's `seq` is its own (docs/mqtt.md), not the
    # status document's
    wanted = [(e["kind"], e.get("at")) for e in observer.ordered_events()
              if e.get("kind") in EVENT_KINDS]
    device = _device_id(observer)
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        try:
            view = await asyncio.to_thread(fleet.seen, device)
        except DrillError:
            view = None  # the server is busy: the next poll tells
        if view is not None:
            seen = {(e.get("kind"), e.get("at")) for e in view.events}
            active = (observer.latest or {}).get("uplink", {}).get("active")
            if view.status == "online" and view.active == active \
                    and all(key in seen for key in wanted):
                return True
        await asyncio.sleep(POLL_S)
    return False


def _device_id(observer: Observer) -> str:
    return str((observer.latest or {}).get("device_id") or DEVICE_ID)


def _api_pin(status: dict[str, Any]) -> str:
    api = status.get("api") or {}
    if not api.get("tls") or not api.get("cert_sha256"):
        raise DrillError("start the box", f"the POS API on the LAN serves no TLS: {api}")
    return str(api["cert_sha256"])


class Drill:
    def __init__(self, options: Options, out: TextIO, live_view: bool | None = None,
                 lte_carrier: str = "KT") -> None:
        self.options = options
        self.phases = plan(options)
        self.screen = live.Screen(out, live_view)
        self.out = out
        self.lte_carrier = lte_carrier
        self.token = new_secret()
        self.merchant_key = new_secret()
        self.current: Phase = self.phases[0]
        self.phase_started = time.monotonic()
        self.played: list[PlayedPhase] = []
        self.steer_routes: dict[str, str] | None = None  # read once steered in the brownout
        self.max_steer_s = 0.0  # what the drill's `[steer]` promises (`steer_limit_s`)

    async def run(self, shop: Shop, workdir: Path) -> Report:
        with _logs_to(workdir / "gateway.log", "lab.gateway_sim"):
            return await self._run(shop, workdir)

    async def _run(self, shop: Shop, workdir: Path) -> Report:
        # a fresh gateway seal key pair: the private key goes to the gateway simulator
        # only, the box's config names the public one (docs/gateway-protocol.md)
        seal = write_seal_keys(workdir)
        with inside(shop.internet):
            sim = GatewaySimulator(
                self.merchant_key, host=GATEWAY_IP, port=GATEWAY_PORT, seed=2021,
                rules=DeclineRules(decline_amounts=frozenset({DECLINED_AMOUNT})),
                seal_opener=SealOpener.from_pem_files([seal.private]))
            await sim.start()
        fleet = FleetBroker(shop.internet, workdir)
        try:
            await asyncio.to_thread(fleet.wait_listening)
            box_config = drill_config(
                workdir, merchant_key=self.merchant_key, token=self.token,
                lte_carrier=self.lte_carrier, failback_after_s=self.options.failback_after_s,
                unsteer_after_s=self.options.unsteer_after_s, seal_key_file=seal.public)
            self.max_steer_s = steer_limit_s(box_config.steer.steer_after_s,
                                             box_config.steer.window_s)
            config = write_config(workdir / "storebox.toml", box_config,
                                  by="`storebox drill`")
            daemon = BoxDaemon(shop.box, config)
            try:
                await asyncio.to_thread(daemon.wait_ready)
                with inside(shop.client):
                    report = await self._play(shop, daemon, sim, fleet, seal)
            finally:
                code = await asyncio.to_thread(daemon.stop)
                if code != 0:
                    self.out.write(f"the box exited with {code}; log: {daemon.log_path}\n"
                                   f"{daemon.log_tail()}\n")
        finally:
            fleet.stop()
            await sim.stop()
        return report

    async def _play(self, shop: Shop, daemon: BoxDaemon, sim: GatewaySimulator,
                    fleet: FleetBroker, seal: SealKeyPair) -> Report:
        observer = Observer(daemon.admin_socket, self.token)
        terminals = Terminals(f"https://{LAN_BOX}:{API_PORT}", self.token,
                              phase=lambda: self.current.name, count=self.options.terminals,
                              interval_s=self.options.pos_interval_s)
        async with asyncio.TaskGroup() as tg:
            watching = tg.create_task(observer.run(), name="drill-observer")
            if not await observer.until(_on_wired, 30.0):
                watching.cancel()
                uplink = observer.latest and observer.latest.get("uplink")
                raise DrillError("start the box", "the box did not come up on wired within "
                                 f"30 s; uplink: {uplink}\n{daemon.log_tail()}")
            # the POS pins the certificate the box shows in its status (docs/openapi.json)
            terminals.pin = _api_pin(observer.latest or {})
            showing = tg.create_task(self._show(observer, terminals), name="drill-view")
            selling = tg.create_task(terminals.run(), name="drill-pos")
            try:
                await self._timeline(shop, observer)
                # the POS keeps selling on wired for a moment after the recovery
                await asyncio.sleep(min(3.0, self.options.normal_s))
            finally:
                terminals.stop.set()
            await selling
            await observer.until(_recovered, 30.0)
            caught_up = await _fleet_caught_up(fleet, observer, 30.0)
            showing.cancel()
            watching.cancel()
        self.screen.close()
        counts = {sale.payment_id: sim.processed_count(sale.payment_id)
                  for sale in terminals.sales if sale.payment_id is not None}
        arrivals = {a.payment_id: Arrival(a.offline, a.seal_kid) for a in sim.authorizations()}
        report = build_report(phases=self.played, samples=observer.samples,
                              events=observer.ordered_events(), sales=terminals.sales,
                              gateway_counts=counts, final=observer.latest or {},
                              arrivals=arrivals, seal_kid=seal.kid,
                              card_refused_422=sim.stats().card_refused_422,
                              steer_routes=self.steer_routes,
                              max_steer_s=self.max_steer_s,
                              brownout_pct=self.options.brownout_pct)
        try:
            seen = (await asyncio.to_thread(fleet.seen, _device_id(observer))).to_json()
        except DrillError as exc:
            seen = {"error": exc.detail}
        report.fleet = {**seen, "caught_up": caught_up}
        return report

    async def _timeline(self, shop: Shop, observer: Observer) -> None:
        applied = Faults()
        for phase in self.phases:
            self._apply(shop, applied, phase.faults)
            applied = phase.faults
            self.current, self.phase_started = phase, time.monotonic()
            started_at = datetime.now(UTC)
            if phase.name in _UNTIL:
                await observer.until(_UNTIL[phase.name], phase.seconds)
            elif phase.name == "brownout":
                await self._brownout(shop, observer, phase)
            else:
                await asyncio.sleep(phase.seconds)
            self.played.append(PlayedPhase(phase.name, self.phase_started, time.monotonic(),
                                           started_at, datetime.now(UTC)))

    async def _brownout(self, shop: Shop, observer: Observer, phase: Phase) -> None:
        """The brownout's `seconds`; once the box says it steered, the routes are read
        (the proof that only the gateway's traffic moved)."""
        end = self.phase_started + phase.seconds
        if await observer.until(_steered, phase.seconds):
            self.steer_routes = await asyncio.to_thread(steer_routes, shop.box)
        await asyncio.sleep(max(0.0, end - time.monotonic()))

    @staticmethod
    def _apply(shop: Shop, before: Faults, after: Faults) -> None:
        if (before.wired_loss_pct, before.wired_blackhole) != (after.wired_loss_pct,
                                                               after.wired_blackhole):
            if after.wired_blackhole:
                faults.blackhole(shop.isp_wired, "cust0")
            elif after.wired_loss_pct:
                faults.random_loss(shop.isp_wired, "cust0", after.wired_loss_pct)
            else:
                faults.heal(shop.isp_wired)
        if before.lte_blackhole != after.lte_blackhole:
            if after.lte_blackhole:
                faults.blackhole(shop.isp_lte, "cust0")
            else:
                faults.heal(shop.isp_lte)

    async def _show(self, observer: Observer, terminals: Terminals) -> None:
        tick = 0
        while True:
            tick += 1
            doc = observer.latest
            elapsed = time.monotonic() - self.phase_started
            events = observer.ordered_events()
            text = live.frame(phase=self.current.name, story=self.current.story,
                              elapsed=elapsed, length=self.current.seconds, doc=doc,
                              sales=terminals.sales, events=events, tick=tick)
            active = doc.get("uplink", {}).get("active") if doc else None
            steered = " (the gateway's traffic by LTE)" if doc and _steered(doc) else ""
            last = events[-1] if events else {}
            summary = (f"phase {self.current.name}: "
                       f"active {active}{steered}; last event {last.get('kind')}: "
                       f"{last.get('message')}")
            self.screen.show(text, summary)
            await asyncio.sleep(0.5)


def run_drill(options: Options, out: TextIO, *, live_view: bool | None = None,
              lte_carrier: str = "KT", workdir: Path | None = None,
              keep: bool = False) -> Report:
    """The whole drill; the report (its `failures` say whether it passed)."""
    preflight()
    own = workdir is None
    work = Path(tempfile.mkdtemp(prefix="storebox-drill-")) if workdir is None else workdir
    work.mkdir(parents=True, exist_ok=True)
    work.chmod(0o700)
    drill = Drill(options, out, live_view, lte_carrier)
    report: Report | None = None
    interrupted = False
    try:
        with build_shop(prefix="sbd") as shop:
            report = asyncio.run(drill.run(shop, work))
    except KeyboardInterrupt:
        interrupted = True
        raise
    finally:
        # kept when it failed or could not run (the daemon's log says why), or when asked
        passed = report is not None and report.passed
        if own and not keep and (passed or interrupted):
            shutil.rmtree(work, ignore_errors=True)
        else:
            out.write(f"the drill's files (config, daemon.log, state): {work}\n")
    out.write(render(report) + "\n")
    return report
