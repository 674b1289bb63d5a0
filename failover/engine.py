"""The failover engine: probes, carrier events, decisions and route control, composed.

``FailoverEngine.run()`` owns every task it starts (one ``asyncio.TaskGroup``; each
probe loop owns its rounds in a group of its own) and bounds every wait with a
timeout scope. Nothing outlives ``run()``: cancel it to stop the engine. Routes,
forwarding and conntrack are injected and stay as they are on exit (the controllers
are restart-safe); closing them is their owner's job.

Tasks
-----
* a probe loop per uplink. A round *starts* every ``round_interval_s`` of that
  uplink's ``MonitorConfig``, **without waiting for the previous round**: each round
  is a task with its own deadline (``probe_timeout_s``, enforced by the probes and,
  as a backstop, by a timeout scope ``round_slack_s`` later), so with the defaults
  up to two rounds are in flight and a verdict arrives every 0.5 s even on a dead
  line (what ``failover.decision`` assumes). Rounds are fed to the uplink's
  ``LinkMonitor`` in completion order.
* LTE hot standby: LTE is probed *sparsely* while it is not needed, every
  ``standby_interval_s`` -- by default ``standby_probe_interval_s()`` for the bytes
  one LTE round costs (the documented per-target estimate, or the measured average
  when larger) within ``lte_budget_bytes`` (5 MB/month), stretched by
  ``adaptive_standby_interval_s()`` when the month's standby spending runs ahead.
  LTE is probed at its full rate while it is active, while wired is down (which
  includes booting and carrier loss), while wired is *suspect* (its down test half
  way: half of ``down_after_rounds`` consecutive failed rounds, or 3/4 of the
  sequential test's threshold; a fresh LTE verdict is ready by the time wired is
  declared down), and while LTE awaits a verdict -- at boot, after
  its carrier returned (modem reconnect) or a SIM switch, until it is usable or a
  round fails (at most ``stable_s`` of rounds, ~36 KB with the defaults; those bytes
  count against the budget). A switch to the full rate starts a round at once.
* a carrier watcher (``LinkWatcher``, restarted on failure): carrier loss marks the
  uplink down at once, no rounds needed.
* a route worker that applies the selector's decisions one at a time through
  ``switch_uplink`` (routes make-before-break, then the LAN forwarding, then the
  conntrack flush of the uplink traffic left). Decisions taken while a switch runs
  are coalesced: the worker always applies the latest one. A failed switch is
  reported through ``on_error`` and retried with exponential backoff (a new decision
  cuts the wait short); the engine keeps running. An uplink left while it still
  works is flushed ``flush_grace_s`` later (a dead one at once): until then the LAN
  flows that started on it keep it (sticky uplinks, ``failover.sticky``), after it
  their next packets follow the new route.
* maintenance, every ``maintenance_interval_s``: ``ensure_present`` for every uplink
  that has carrier (healthy, or down and watched for recovery: its bound probes need
  a route out of it, see ``failover.probes``), ``sticky.sync`` (the sticky tables
  copy the uplinks' default routes; also run after every switch), and
  ``conntrack.addresses_of`` for every usable uplink, so that a flush after it died
  still knows the addresses it had (a dead uplink has often lost its DHCP address).

The selector (``UplinkSelector``) is consulted after every round and carrier event.

SIM switch: when LTE fails while it is the active uplink and the selector gives up
(offline mode), an optional ``switch_sim()`` callback is called *before* offline mode
is applied. When it returns True (the modem now uses its other SIM) the LTE link is
judged afresh (a new ``LinkMonitor``, probed at the full rate) for up to
``sim_verdict_timeout_s``; if the selector picks an uplink meanwhile, that is applied
and offline mode never is. Otherwise (False, an exception, a timeout) offline mode is
applied. One attempt per LTE failure: re-armed once LTE has been usable again.

Clock: ``clock`` drives the decisions; scheduling uses the event loop's time. They
must agree (the default, ``time.monotonic``, is what asyncio's loop uses; tests run a
virtual-time loop and pass its ``time``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, Protocol

from failover import link
from failover.budget import (
    LTE_BUDGET_BYTES,
    SECONDS_PER_MONTH,
    adaptive_standby_interval_s,
    standby_probe_interval_s,
)
from failover.config import MonitorConfig, SelectorConfig
from failover.decision import LinkMonitor
from failover.errors import DecisionConfigError, ProbeConfigError, RouteConfigError
from failover.link import LinkChange, LinkStatus, Monotonic, RoundOutcome, Transition
from failover.linkwatch import LinkWatcher
from failover.probes.accounting import ByteCounter
from failover.probes.options import ProbeOptions
from failover.probes.round import probe_round
from failover.routes import (
    ConnectionFlusher,
    Forwarding,
    RouteController,
    RouteProblem,
    SwitchReport,
    Uplink,
    UplinkName,
    switch_uplink,
    uplink_map,
)
from failover.selector import UplinkSelector
from failover.targets import ProbeTarget, TargetKind, parse_target

__all__ = [
    "ROUND_BYTES_ESTIMATE",
    "CarrierSource",
    "FailoverEngine",
    "LinkWatcherFactory",
    "ProbeRound",
    "RoundFn",
    "StickySync",
    "estimate_round_bytes",
]

log = logging.getLogger(__name__)


class StickySync(Protocol):
    """What the engine needs from ``failover.sticky.StickyRoutes``."""

    async def sync(self) -> Any: ...


class ProbeRound(RoundOutcome, Protocol):
    """What a round function returns (``probes.RoundResult`` fits)."""

    @property
    def bytes_sent(self) -> int: ...
    @property
    def bytes_received(self) -> int: ...


class RoundFn(Protocol):
    """``probes.probe_round``'s signature; tests pass a fake."""

    def __call__(
        self,
        targets: Sequence[ProbeTarget],
        interface: str,
        timeout_s: float,
        quorum: int,
        *,
        options: ProbeOptions | None = ...,
        counter: ByteCounter | None = ...,
    ) -> Awaitable[ProbeRound]: ...


CarrierSource = AbstractAsyncContextManager[AsyncIterator[tuple[str, bool]]]
LinkWatcherFactory = Callable[[Sequence[str]], CarrierSource]

# IP-level bytes one probe costs without loss (see failover.probes), per target kind.
ROUND_BYTES_ESTIMATE: dict[TargetKind, int] = {
    TargetKind.ICMP: 88,
    TargetKind.DNS: 140,
    TargetKind.TCP: 380,
    TargetKind.HTTP: 920,
    TargetKind.HTTPS: 5000,
}
_NAME_LOOKUP_BYTES = 140  # a target given by name is resolved over the uplink first


def estimate_round_bytes(targets: Sequence[ProbeTarget]) -> int:
    """Bytes one round over ``targets`` costs on the wire, from the documented figures."""
    total = 0
    for target in targets:
        total += ROUND_BYTES_ESTIMATE[target.kind]
        if target.kind is not TargetKind.DNS and not target.host_is_ip:
            total += _NAME_LOOKUP_BYTES
    return total


@dataclass(frozen=True, slots=True)
class _FailedRound:
    """A round that did not finish within its scope: nothing answered."""

    attempted: int
    quorum: int
    ok: bool = False
    succeeded: int = 0
    median_latency_ms: float | None = None
    bytes_sent: int = 0
    bytes_received: int = 0


@dataclass(frozen=True, slots=True)
class _LastRound:
    started: float
    finished: float
    ok: bool
    succeeded: int
    attempted: int
    median_latency_ms: float | None
    standby: bool


def _route_name(choice: link.Uplink) -> UplinkName | None:
    if choice is link.Uplink.WIRED:
        return "wired"
    if choice is link.Uplink.LTE:
        return "lte"
    return None


def _choice(name: UplinkName) -> link.Uplink:
    return link.Uplink.WIRED if name == "wired" else link.Uplink.LTE


def _positive(field: str, value: float) -> float:
    if not (isinstance(value, int | float) and value > 0):
        raise DecisionConfigError(field, value, "must be a positive number")
    return float(value)


class FailoverEngine:
    """Watches the uplinks end to end and keeps traffic on the best one. See module docs."""

    def __init__(
        self,
        uplinks: Sequence[Uplink],
        targets: Sequence[ProbeTarget | str] | Mapping[UplinkName, Sequence[ProbeTarget | str]],
        routes: RouteController,
        *,
        forwarding: Forwarding | None = None,
        conntrack: ConnectionFlusher | None = None,
        sticky: StickySync | None = None,
        monitor: MonitorConfig | Mapping[UplinkName, MonitorConfig] | None = None,
        selector: SelectorConfig | None = None,
        probe_options: ProbeOptions | Mapping[UplinkName, ProbeOptions] | None = None,
        counter: ByteCounter | None = None,
        netns: str | None = None,
        clock: Monotonic = time.monotonic,
        round_fn: RoundFn = probe_round,
        link_watcher: LinkWatcherFactory | None = None,
        watch_carrier: bool = True,
        lte_budget_bytes: float = LTE_BUDGET_BYTES,
        standby_interval_s: float | None = None,
        maintenance_interval_s: float = 10.0,
        round_slack_s: float = 0.5,
        switch_timeout_s: float = 30.0,
        retry_initial_s: float = 0.5,
        retry_max_s: float = 10.0,
        flush_grace_s: float = 5.0,
        switch_sim: Callable[[], Awaitable[bool]] | None = None,
        sim_switch_timeout_s: float = 60.0,
        sim_verdict_timeout_s: float = 10.0,
        on_link: Callable[[UplinkName, LinkStatus], None] | None = None,
        on_transition: Callable[[Transition, SwitchReport], None] | None = None,
        on_error: Callable[[BaseException], None] | None = None,
        on_round: Callable[[UplinkName, ProbeRound], None] | None = None,
    ) -> None:
        self._uplinks: dict[UplinkName, Uplink] = uplink_map(uplinks)
        if "wired" not in self._uplinks:
            raise RouteConfigError("uplinks", sorted(self._uplinks), "a wired uplink is needed")
        missing = set(self._uplinks) - set(routes.uplinks)
        if missing:
            raise RouteConfigError("uplinks", sorted(missing),
                                   "not managed by the route controller")
        for name, uplink in self._uplinks.items():
            if routes.uplinks[name].interface != uplink.interface:
                raise RouteConfigError(f"{name}.interface", uplink.interface,
                                       "differs from the route controller's")
        names = list(self._uplinks)
        self._routes = routes
        self._flush_grace_s = flush_grace_s
        self._forwarding = forwarding
        self._conntrack = conntrack
        self._sticky = sticky
        self._configs: dict[UplinkName, MonitorConfig] = {}
        self._targets: dict[UplinkName, tuple[ProbeTarget, ...]] = {}
        self._options: dict[UplinkName, ProbeOptions | None] = {}
        for name in names:
            cfg = (monitor.get(name, MonitorConfig()) if isinstance(monitor, Mapping)
                   else monitor or MonitorConfig())
            chosen = targets.get(name) if isinstance(targets, Mapping) else targets
            if not chosen:
                raise ProbeConfigError(f"{name}.targets", chosen, "at least one target is needed")
            parsed = tuple(t if isinstance(t, ProbeTarget) else parse_target(t) for t in chosen)
            if cfg.quorum > len(parsed):
                raise ProbeConfigError(f"{name}.quorum", cfg.quorum,
                                       f"exceeds the {len(parsed)} probe targets")
            self._configs[name] = cfg
            self._targets[name] = parsed
            self._options[name] = (probe_options.get(name) if isinstance(probe_options, Mapping)
                                   else probe_options)
        self._counter = counter
        self._clock = clock
        self._round_fn = round_fn
        self._netns = netns
        self._link_watcher = link_watcher
        self._watch_carrier = watch_carrier
        self._budget = _positive("lte_budget_bytes", lte_budget_bytes)
        self._fixed_standby = (None if standby_interval_s is None
                               else _positive("standby_interval_s", standby_interval_s))
        self._maintenance_interval_s = _positive("maintenance_interval_s", maintenance_interval_s)
        self._round_slack_s = _positive("round_slack_s", round_slack_s)
        self._switch_timeout_s = _positive("switch_timeout_s", switch_timeout_s)
        self._retry_initial_s = _positive("retry_initial_s", retry_initial_s)
        self._retry_max_s = max(self._retry_initial_s, _positive("retry_max_s", retry_max_s))
        self._switch_sim = switch_sim
        self._sim_switch_timeout_s = _positive("sim_switch_timeout_s", sim_switch_timeout_s)
        self._sim_verdict_timeout_s = _positive("sim_verdict_timeout_s", sim_verdict_timeout_s)
        self._on_link = on_link
        self._on_transition = on_transition
        self._on_error = on_error
        self._on_round = on_round

        self._monitors: dict[UplinkName, LinkMonitor] = {
            n: LinkMonitor(self._configs[n], clock) for n in names}
        # Without an LTE uplink the selector sees one that never comes up.
        self._no_lte = LinkMonitor(MonitorConfig(), clock).status()
        self._selector = UplinkSelector(selector, clock)
        self._published: dict[UplinkName, tuple[link.LinkState, bool]] = {
            n: (m.state, m.status().carrier) for n, m in self._monitors.items()}
        self._carrier: dict[UplinkName, bool | None] = dict.fromkeys(names)
        self._wake: dict[UplinkName, asyncio.Event] = {n: asyncio.Event() for n in names}
        self._rounds_started: dict[UplinkName, int] = dict.fromkeys(names, 0)
        self._in_flight: dict[UplinkName, int] = dict.fromkeys(names, 0)
        self._last_round: dict[UplinkName, _LastRound | None] = dict.fromkeys(names)
        self._lte_full_rate = True
        self._lte_verdict_pending = True  # boot: until LTE is usable or a round fails
        # LTE standby accounting
        self._standby_bytes = 0
        self._standby_rounds = 0
        self._measured_round_bytes: float | None = None
        self._period_start = clock()
        self._period_bytes = 0
        # decisions and their application
        self._latest: Transition | None = None
        self._reported: Transition | None = None
        self._applied: link.Uplink | None = None  # None: nothing applied yet
        self._route_wake = asyncio.Event()
        self._decision_event = asyncio.Event()
        self._switch_failures = 0
        self._switches = 0
        self._route_problems: list[RouteProblem] = []
        # errors
        self._errors = 0
        self._last_error: str | None = None
        # SIM switching
        self._sim_armed = True
        self._sim_task: asyncio.Task[None] | None = None
        self._sim_switches = 0
        self._tg: asyncio.TaskGroup | None = None
        self._running = False

    # ------------------------------------------------------------------ public view

    @property
    def active(self) -> link.Uplink:
        """The selector's decision: ``wired``, ``lte`` or ``none`` (offline mode)."""
        return self._selector.active

    @property
    def applied(self) -> link.Uplink | None:
        """What route control last applied (None: nothing yet)."""
        return self._applied

    @property
    def standby_bytes(self) -> int:
        """LTE probe bytes spent while LTE was not the active uplink (hot standby)."""
        return self._standby_bytes

    @property
    def standby_interval_s(self) -> float:
        """Seconds between LTE rounds while LTE is in hot standby."""
        if self._fixed_standby is not None:
            return self._fixed_standby
        per_round = self.lte_round_bytes
        base = standby_probe_interval_s(per_round, self._budget)
        self._roll_period()
        elapsed = self._clock() - self._period_start
        adaptive = adaptive_standby_interval_s(
            self._period_bytes, elapsed, per_round, self._budget,
            min_interval_s=base, max_interval_s=max(base, 3600.0))
        return max(base, adaptive)

    @property
    def lte_round_bytes(self) -> float:
        """Bytes one LTE round costs: the estimate, or the measured average when larger."""
        targets = self._targets.get("lte") or self._targets["wired"]
        estimate = float(estimate_round_bytes(targets))
        measured = self._measured_round_bytes
        return estimate if measured is None else max(estimate, measured)

    def links(self) -> dict[UplinkName, LinkStatus]:
        return {name: m.status() for name, m in self._monitors.items()}

    def describe(self) -> dict[str, Any]:
        """JSON-ready state for ``storebox status``."""
        now = self._clock()
        links: dict[str, Any] = {}
        for name, monitor in self._monitors.items():
            st = monitor.status()
            last = self._last_round[name]
            role = st.state.value
            if name == "lte":
                role = self._selector.lte_role(st)
            elif self._selector.active is link.Uplink.WIRED and st.usable:
                role = "active"
            links[name] = {
                "interface": self._uplinks[name].interface,
                "state": st.state.value,
                "role": role,
                "reason": st.reason,
                "carrier": st.carrier,
                "since_s": round(now - st.since, 3),
                "stable_for_s": round(st.stable_for(now), 3),
                "consecutive_failures": st.consecutive_failures,
                "detector": self._configs[name].detector,
                "evidence": round(st.evidence, 2),
                "loss": st.loss,
                "median_latency_ms": st.median_latency_ms,
                "probe_interval_s": self._interval(name),
                "rounds_started": self._rounds_started[name],
                "rounds_in_flight": self._in_flight[name],
                "targets": [t.text for t in self._targets[name]],
                "last_round": None if last is None else {
                    "ok": last.ok, "succeeded": last.succeeded, "attempted": last.attempted,
                    "median_latency_ms": last.median_latency_ms, "standby": last.standby,
                    "age_s": round(now - last.finished, 3)},
            }
        history = self._selector.history[-10:]
        return {
            "active": self._selector.active.value,
            "applied": None if self._applied is None else self._applied.value,
            "active_since_s": round(now - self._selector.since, 3),
            "switch_pending": self._switch_pending(),
            "switches": self._switches,
            "switch_failures": self._switch_failures,
            "backend": self._routes.backend,
            "links": links,
            "lte_standby": None if "lte" not in self._uplinks else {
                "full_rate": self._lte_full_rate,
                "verdict_pending": self._lte_verdict_pending,
                "interval_s": self.standby_interval_s,
                "bytes_per_round": self.lte_round_bytes,
                "budget_bytes_per_month": self._budget,
                "standby_bytes": self._standby_bytes,
                "standby_rounds": self._standby_rounds,
            },
            "sim": {"switch_available": self._switch_sim is not None,
                    "switches": self._sim_switches, "armed": self._sim_armed,
                    "switching": self._sim_task is not None and not self._sim_task.done()},
            "transitions": [{"kind": t.kind.value, "from": t.from_uplink.value,
                             "to": t.to_uplink.value, "reason": t.reason,
                             "age_s": round(now - t.at, 3)} for t in history],
            "route_problems": [p.as_dict() for p in self._route_problems],
            "errors": self._errors,
            "last_error": self._last_error,
        }

    # ------------------------------------------------------------------ running

    async def run(self) -> None:
        """Run until cancelled. Every task started here is owned by this call."""
        if self._running:
            raise RuntimeError("FailoverEngine.run() is already running")
        self._running = True
        try:
            async with asyncio.TaskGroup() as tg:
                self._tg = tg
                self._decide()  # the initial LTE rate, and nothing else
                for name in self._uplinks:
                    tg.create_task(self._probe_loop(name), name=f"failover-probes-{name}")
                if self._watch_carrier:
                    tg.create_task(self._carrier_loop(), name="failover-carrier")
                tg.create_task(self._route_worker(), name="failover-routes")
                tg.create_task(self._maintenance_loop(), name="failover-maintenance")
        finally:
            self._tg = None
            self._running = False

    # ------------------------------------------------------------------ probing

    def _interval(self, name: UplinkName) -> float:
        if name == "lte" and not self._lte_full_rate:
            return self.standby_interval_s
        return self._configs[name].round_interval_s

    def _wants_full_rate_lte(self) -> bool:
        if "lte" not in self._monitors:
            return False
        if self._selector.active is link.Uplink.LTE:
            return True
        if self._sim_task is not None and not self._sim_task.done():
            return True
        if self._lte_verdict_pending:
            return True  # boot, carrier back, a new SIM: get a verdict quickly
        wired = self._monitors["wired"].status()
        return not wired.usable or wired.suspect

    async def _probe_loop(self, name: UplinkName) -> None:
        loop = asyncio.get_running_loop()
        wake = self._wake[name]
        last_start: float | None = None
        async with asyncio.TaskGroup() as rounds:
            while True:
                wake.clear()
                interval = self._interval(name)
                now = loop.time()
                due = now if last_start is None else last_start + interval
                if due - now > 1e-3:
                    # A timeout scope until the next round; a rate change wakes us early.
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout_at(due):
                            await wake.wait()
                    continue
                # Keep the cadence; after a stall (or a rate change) start afresh.
                last_start = due if last_start is not None and now - due < interval else now
                standby = name == "lte" and not self._lte_full_rate
                self._rounds_started[name] += 1
                rounds.create_task(self._round(name, standby),
                                   name=f"failover-round-{name}-{self._rounds_started[name]}")

    async def _round(self, name: UplinkName, standby: bool) -> None:
        cfg = self._configs[name]
        targets = self._targets[name]
        lte_idle = name == "lte" and self._selector.active is not link.Uplink.LTE
        started = self._clock()
        self._in_flight[name] += 1
        try:
            try:
                async with asyncio.timeout(cfg.probe_timeout_s + self._round_slack_s):
                    outcome: ProbeRound = await self._round_fn(
                        targets, self._uplinks[name].interface, cfg.probe_timeout_s,
                        cfg.quorum, options=self._options[name], counter=self._counter)
            except TimeoutError:
                outcome = _FailedRound(attempted=len(targets), quorum=cfg.quorum)
        except Exception as exc:
            # probe_round never raises for network failures: this is a bug or bad
            # configuration. Report it; do not count it as an outage.
            self._report(exc)
            return
        finally:
            self._in_flight[name] -= 1
        if name == "lte":
            self._account_lte(outcome, lte_idle, standby)
        self._last_round[name] = _LastRound(
            started, self._clock(), outcome.ok, outcome.succeeded, outcome.attempted,
            outcome.median_latency_ms, standby)
        change = self._monitors[name].observe_round(outcome)
        if name == "lte" and not outcome.ok:
            self._lte_verdict_pending = False
        self._publish(name, change)
        self._decide()
        if self._on_round is not None:
            try:
                self._on_round(name, outcome)
            except Exception as exc:
                self._report(exc)

    def _roll_period(self) -> None:
        now = self._clock()
        while now - self._period_start >= SECONDS_PER_MONTH:
            self._period_start += SECONDS_PER_MONTH
            self._period_bytes = 0

    def _account_lte(self, outcome: ProbeRound, idle: bool, standby: bool) -> None:
        spent = outcome.bytes_sent + outcome.bytes_received
        if spent > 0 and outcome.ok:
            previous = self._measured_round_bytes
            self._measured_round_bytes = (float(spent) if previous is None
                                          else 0.8 * previous + 0.2 * spent)
        if idle:
            self._roll_period()
            self._standby_bytes += spent
            self._period_bytes += spent
            if standby:
                self._standby_rounds += 1

    # ------------------------------------------------------------------ carrier

    def _watcher(self, interfaces: Sequence[str]) -> CarrierSource:
        if self._link_watcher is not None:
            return self._link_watcher(interfaces)
        return LinkWatcher(interfaces, netns=self._netns)

    async def _carrier_loop(self) -> None:
        by_interface = {u.interface: name for name, u in self._uplinks.items()}
        delay = self._retry_initial_s
        while True:
            try:
                async with self._watcher(sorted(by_interface)) as events:
                    delay = self._retry_initial_s
                    async for ifname, up in events:
                        name = by_interface.get(ifname)
                        if name is not None:
                            self.carrier(name, up)
                raise RuntimeError("the carrier watcher stopped")
            except Exception as exc:
                self._report(exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, self._retry_max_s)

    def carrier(self, name: UplinkName, up: bool) -> None:
        """Feed a carrier event (the watcher does; usable by an owner with its own)."""
        if name == "lte" and up and self._carrier[name] is False:
            self._lte_verdict_pending = not self._monitors[name].status().usable
        self._carrier[name] = up
        change = self._monitors[name].carrier(up)
        self._publish(name, change)
        self._decide()

    # ------------------------------------------------------------------ decisions

    def _status(self, name: UplinkName) -> LinkStatus:
        monitor = self._monitors.get(name)
        return self._no_lte if monitor is None else monitor.status()

    def _publish(self, name: UplinkName, change: LinkChange | None) -> None:
        status = self._monitors[name].status()
        key = (status.state, status.carrier)
        if change is None and key == self._published[name]:
            return
        self._published[name] = key
        if change is not None:
            log.info("failover: %s %s -> %s (%s)", name, change.old, change.new, change.reason)
        if name == "lte" and status.usable:
            self._sim_armed = True
            self._lte_verdict_pending = False
        if self._on_link is not None:
            try:
                self._on_link(name, status)
            except Exception as exc:
                self._report(exc)

    def _decide(self) -> None:
        transition = self._selector.update(self._status("wired"), self._status("lte"))
        if transition is not None:
            log.warning("failover: %s %s -> %s: %s", transition.kind, transition.from_uplink,
                        transition.to_uplink, transition.reason)
            self._latest = transition
            self._route_wake.set()
            self._decision_event.set()
        full = self._wants_full_rate_lte()
        if full != self._lte_full_rate:
            self._lte_full_rate = full
            if "lte" in self._wake:
                self._wake["lte"].set()

    # ------------------------------------------------------------------ route control

    def _switch_pending(self) -> bool:
        return self._latest is not None and (
            self._latest is not self._reported or self._applied is not self._selector.active)

    async def _route_worker(self) -> None:
        delay = self._retry_initial_s
        while True:
            await self._route_wake.wait()
            self._route_wake.clear()
            if await self._apply_latest():
                delay = self._retry_initial_s
                continue
            # Failed: retry after a backoff; a new decision cuts the wait short.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._route_wake.wait()
            delay = min(delay * 2, self._retry_max_s)
            self._route_wake.set()

    async def _apply_latest(self) -> bool:
        """Apply the selector's current decision. False when it failed (retry)."""
        transition = self._latest
        if transition is None or not self._switch_pending():
            return True
        target = self._selector.active
        if target is link.Uplink.NONE and self._defer_offline():
            return True
        previous = self._applied
        left: list[UplinkName] = []
        old = None if previous is None else _route_name(previous)
        if old is not None and previous is not target:
            left.append(old)
        # flows on an uplink that still works (a failback) get a grace period to finish
        later = [n for n in left if n in self._monitors and self._monitors[n].status().usable]
        try:
            async with asyncio.timeout(self._switch_timeout_s):
                report = await switch_uplink(
                    _route_name(target), routes=self._routes, forwarding=self._forwarding,
                    conntrack=self._conntrack, left=left,
                    flush=[n for n in left if n not in later])
        except Exception as exc:
            self._switch_failures += 1
            self._report(exc)
            return False
        self._applied = target
        self._reported = transition
        self._switches += 1
        if later and self._conntrack is not None and self._tg is not None:
            self._tg.create_task(self._flush_later(later, target), name="failover-late-flush")
        if self._on_transition is not None:
            try:
                self._on_transition(transition, report)
            except Exception as exc:
                self._report(exc)
        await self._sync_sticky()
        # A decision taken while switching is applied next (the wake flag is set).
        return True

    async def _sync_sticky(self) -> None:
        """Bring the sticky tables in line with the main table (a failure is reported;
        the switch itself stands)."""
        if self._sticky is None:
            return
        try:
            async with asyncio.timeout(self._switch_timeout_s):
                changes = await self._sticky.sync()
        except Exception as exc:
            self._report(exc)
        else:
            if changes:
                log.info("failover: sticky routes: %s", changes)

    async def _flush_later(self, names: list[UplinkName], target: link.Uplink) -> None:
        """Flush the flows still pinned to uplinks left while healthy, after a grace
        period (unless traffic went back to them meanwhile)."""
        await asyncio.sleep(self._flush_grace_s)
        assert self._conntrack is not None
        for name in names:
            if self._applied is not target or _route_name(self._applied) == name:
                return
            try:
                await self._conntrack.flush_uplink(self._routes.uplinks[name].interface)
            except Exception as exc:
                self._report(exc)

    def _defer_offline(self) -> bool:
        """Before offline mode after LTE failed while active: try the other SIM."""
        if self._sim_task is not None and not self._sim_task.done():
            return True  # an attempt runs; it wakes the worker when it concludes
        if (self._switch_sim is None or self._applied is not link.Uplink.LTE
                or not self._sim_armed or "lte" not in self._monitors
                or self._monitors["lte"].status().usable or self._tg is None):
            return False
        self._sim_armed = False
        self._sim_task = self._tg.create_task(self._sim_attempt(), name="failover-sim-switch")
        self._decide()  # LTE at full rate while the attempt runs
        return True

    async def _sim_attempt(self) -> None:
        assert self._switch_sim is not None
        try:
            switched = False
            try:
                async with asyncio.timeout(self._sim_switch_timeout_s):
                    switched = bool(await self._switch_sim())
            except Exception as exc:
                self._report(exc)
            if not switched:
                log.warning("failover: SIM switch did not help; offline mode")
                return
            self._sim_switches += 1
            log.warning("failover: LTE switched to its other SIM; judging it afresh")
            monitor = LinkMonitor(self._configs["lte"], self._clock)
            if self._carrier["lte"] is False:
                monitor.carrier(False)
            self._monitors["lte"] = monitor
            self._lte_verdict_pending = True
            self._publish("lte", None)
            self._decide()
            self._wake["lte"].set()
            try:
                problems = await self._routes.ensure_present(["lte"])
            except Exception as exc:
                self._report(exc)
            else:
                self._note_problems(problems, ["lte"])
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._sim_verdict_timeout_s):
                    while self._selector.active is link.Uplink.NONE:
                        self._decision_event.clear()
                        await self._decision_event.wait()
        finally:
            self._route_wake.set()
            # The attempt is over: LTE drops back to its normal rate.
            asyncio.get_running_loop().call_soon(self._decide)

    # ------------------------------------------------------------------ maintenance

    async def _maintenance_loop(self) -> None:
        while True:
            await self._maintain()
            await asyncio.sleep(self._maintenance_interval_s)

    async def _maintain(self) -> None:
        watched = [n for n, m in self._monitors.items() if m.status().carrier]
        if watched:
            try:
                async with asyncio.timeout(self._switch_timeout_s):
                    problems = await self._routes.ensure_present(watched)
            except Exception as exc:
                self._report(exc)
            else:
                self._note_problems(problems, watched)
        await self._sync_sticky()
        addresses_of = getattr(self._conntrack, "addresses_of", None)
        if addresses_of is None:
            return
        for name, monitor in self._monitors.items():
            if not monitor.status().usable:
                continue
            try:
                async with asyncio.timeout(self._switch_timeout_s):
                    await addresses_of(self._uplinks[name].interface)
            except Exception as exc:
                self._report(exc)

    def _note_problems(self, problems: list[RouteProblem], checked: Sequence[UplinkName]) -> None:
        kept = [p for p in self._route_problems if p.uplink not in checked]
        new = kept + list(problems)
        if new != self._route_problems:
            for problem in problems:
                log.warning("failover: no route via %s (%s): %s", problem.uplink,
                            problem.interface, problem.reason)
        self._route_problems = new

    # ------------------------------------------------------------------ errors

    def _report(self, exc: BaseException) -> None:
        self._errors += 1
        self._last_error = f"{type(exc).__name__}: {exc}"
        log.error("failover: %s", self._last_error, exc_info=exc)
        if self._on_error is not None:
            try:
                self._on_error(exc)
            except Exception:
                log.exception("failover: on_error callback failed")
