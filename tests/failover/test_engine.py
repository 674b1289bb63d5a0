"""FailoverEngine with a fake network: instant and deterministic (virtual time).

The engine runs on an event loop whose clock only moves when nothing is ready to run:
it then jumps to the next timer. Rounds come from a fake ``round_fn`` that answers
per interface as a test sets it ("ok", "blackhole": nothing before the deadline);
route control, forwarding and conntrack are fakes that record what they were asked.
Hours of simulated time take milliseconds.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest

from failover.budget import estimate_round_bytes, standby_probe_interval_s
from failover.config import MonitorConfig, SelectorConfig
from failover.decision import detection_time_bounds_s
from failover.engine import EngineConfig, FailoverEngine
from failover.errors import ProbeConfigError, RouteConfigError, RouteError
from failover.link import LinkState, LinkStatus, Transition, TransitionKind
from failover.link import Uplink as Choice
from failover.probes.accounting import ByteCounter
from failover.probes.keep import Kept, StaticResolver
from failover.probes.options import ProbeOptions
from failover.probes.sockets import KeptBytes
from failover.routes import MetricScheme, RouteProblem, SwitchReport, Uplink, UplinkName
from failover.sequential import sequential_monitor
from failover.targets import ProbeTarget, parse_targets
from tests.support.clock import loop_time as now
from tests.support.clock import simulate

UPLINKS = [Uplink("wired", "wan0"), Uplink("lte", "wwan0")]
TARGETS = parse_targets(["tcp:198.51.100.10:7000", "dns:198.51.100.53:gateway.test",
                         "icmp:198.51.100.10"])


# --------------------------------------------------------------------------- fakes


@dataclass(frozen=True)
class FakeRound:
    ok: bool
    succeeded: int
    attempted: int
    median_latency_ms: float | None
    bytes_sent: int
    bytes_received: int


@dataclass
class FakeNet:
    """Per interface: "ok" (answers after `latency_s`), "blackhole" (nothing before the
    deadline), "dns-dead" (one target of three never answers)."""

    mode: dict[str, str] = field(default_factory=lambda: {"wan0": "ok", "wwan0": "ok"})
    latency_s: float = 0.02
    bytes_per_probe: int = 80
    rounds: list[tuple[str, float]] = field(default_factory=list)  # (interface, start)
    options: dict[str, ProbeOptions | None] = field(default_factory=dict)  # the last, by interface
    finished: list[tuple[str, float, bool]] = field(default_factory=list)

    async def round(self, targets: Sequence[ProbeTarget], interface: str, timeout_s: float,
                    quorum: int, *, options: ProbeOptions | None = None,
                    counter: ByteCounter | None = None) -> FakeRound:
        self.rounds.append((interface, now()))
        self.options[interface] = options
        mode = self.mode[interface]
        n = len(targets)
        if mode == "blackhole":
            await asyncio.sleep(timeout_s)
            result = FakeRound(False, 0, n, None, self.bytes_per_probe // 2 * n, 0)
        else:
            await asyncio.sleep(self.latency_s)
            good = n - 1 if mode == "dns-dead" else n
            result = FakeRound(good >= quorum, good, n, self.latency_s * 1000,
                               self.bytes_per_probe // 2 * n, self.bytes_per_probe // 2 * good)
        if counter is not None:
            counter.add(interface, result.bytes_sent, result.bytes_received)
        self.finished.append((interface, now(), result.ok))
        return result

    def starts(self, interface: str, after: float = 0.0) -> list[float]:
        return [t for i, t in self.rounds if i == interface and t >= after]


class FakeRoutes:
    backend = "fake"

    def __init__(self) -> None:
        self.uplinks: Mapping[UplinkName, Uplink] = {u.name: u for u in UPLINKS}
        self.metrics = MetricScheme()
        self.calls: list[tuple[str, Any]] = []
        self.fail_next = 0  # that many activate/deactivate_all calls raise
        self.problems: list[RouteProblem] = []

    async def activate(self, uplink: UplinkName) -> None:
        await asyncio.sleep(0.005)
        self.calls.append(("activate", uplink))
        if self.fail_next:
            self.fail_next -= 1
            raise RouteError("activate", uplink, self.uplinks[uplink].interface, "kernel says no")

    async def deactivate_all(self) -> None:
        self.calls.append(("deactivate_all", None))
        if self.fail_next:
            self.fail_next -= 1
            raise RouteError("deactivate_all", None, None, "kernel says no")

    async def ensure_present(self, uplinks: Iterable[UplinkName]) -> list[RouteProblem]:
        self.calls.append(("ensure_present", tuple(uplinks)))
        return list(self.problems)

    async def describe(self) -> dict[str, Any]:
        return {"backend": self.backend}

    async def close(self) -> None:
        return None

    def switches(self) -> list[tuple[str, Any]]:
        return [c for c in self.calls if c[0] != "ensure_present"]


class FakeForwarding:
    def __init__(self) -> None:
        self.applied: list[UplinkName | None] = []

    async def apply(self, active: UplinkName | None, also: Sequence[UplinkName] = ()) -> None:
        if not also:
            self.applied.append(active)


class FakeConntrack:
    def __init__(self) -> None:
        self.flushed: list[str] = []
        self.noted: list[str] = []

    async def flush_uplink(self, interface: str) -> Any:
        self.flushed.append(interface)
        return {"deleted": 0}

    async def addresses_of(self, interface: str) -> list[str]:
        self.noted.append(interface)
        return []


class FakeCarrier:
    """A LinkWatcher stand-in: reports what the test pushes."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[tuple[str, bool] | Exception] = asyncio.Queue()
        self.opened = 0

    def factory(self, interfaces: Sequence[str]) -> Any:
        @asynccontextmanager
        async def watch() -> AsyncIterator[AsyncIterator[tuple[str, bool]]]:
            self.opened += 1
            for name in interfaces:
                self.queue.put_nowait((name, True))
            yield self._events()

        return watch()

    async def _events(self) -> AsyncIterator[tuple[str, bool]]:
        while True:
            item = await self.queue.get()
            if isinstance(item, Exception):
                raise item
            yield item

    def set(self, interface: str, up: bool) -> None:
        self.queue.put_nowait((interface, up))


@dataclass
class Rig:
    engine: FailoverEngine
    net: FakeNet
    routes: FakeRoutes
    forwarding: FakeForwarding
    conntrack: FakeConntrack
    carrier: FakeCarrier
    transitions: list[tuple[float, Transition, SwitchReport]] = field(default_factory=list)
    links: list[tuple[float, UplinkName, LinkStatus]] = field(default_factory=list)
    errors: list[BaseException] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    async def wait_for(self, predicate: Callable[[], bool], within: float) -> float:
        """Simulated seconds until `predicate` holds, re-checked on every callback and
        every round; fails after `within` simulated seconds."""
        started = now()
        async with asyncio.timeout(within):
            while not predicate():
                self.changed.clear()
                await self.changed.wait()
        return now() - started

    async def wait_transition(self, kind: TransitionKind, within: float) -> Transition:
        """The next transition of `kind` applied from now on."""
        seen = len(self.transitions)

        def new() -> list[Transition]:
            return [t for _, t, _ in self.transitions[seen:] if t.kind is kind]

        await self.wait_for(lambda: bool(new()), within)
        return new()[0]

    async def hold(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    def kinds(self) -> list[TransitionKind]:
        return [t.kind for _, t, _ in self.transitions]


FAST_RECOVERY = MonitorConfig(stable_s=3.0)


@asynccontextmanager
async def rig(*, monitor: MonitorConfig = FAST_RECOVERY,
              selector: SelectorConfig | None = None,
              switch_sim: Callable[[], Awaitable[bool]] | None = None,
              **kwargs: Any) -> AsyncIterator[Rig]:
    net = FakeNet()
    routes, forwarding, conntrack, carrier = (FakeRoutes(), FakeForwarding(), FakeConntrack(),
                                              FakeCarrier())
    holder: list[Rig] = []

    def on_transition(t: Transition, report: SwitchReport) -> None:
        holder[0].transitions.append((now(), t, report))
        holder[0].changed.set()

    def on_link(name: UplinkName, status: LinkStatus) -> None:
        holder[0].links.append((now(), name, status))
        holder[0].changed.set()

    def on_error(exc: BaseException) -> None:
        holder[0].errors.append(exc)
        holder[0].changed.set()

    loop = asyncio.get_running_loop()
    config = EngineConfig(monitor=monitor,
                          selector=selector or SelectorConfig(failback_stable_s=3.0), **kwargs)
    engine = FailoverEngine(
        UPLINKS, TARGETS, routes, config, forwarding=forwarding, conntrack=conntrack,
        monotonic=loop.time, round_fn=net.round, link_watcher=carrier.factory,
        switch_sim=switch_sim, on_link=on_link, on_transition=on_transition,
        on_error=on_error)
    r = Rig(engine, net, routes, forwarding, conntrack, carrier)
    holder.append(r)
    real_round = net.round

    async def round_and_notify(*args: Any, **kw: Any) -> FakeRound:
        try:
            return await real_round(*args, **kw)
        finally:
            loop.call_soon(r.changed.set)  # after the engine has seen the result

    engine._round_fn = round_and_notify
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(engine.run())
        try:
            yield r
        finally:
            task.cancel()


async def booted(r: Rig) -> None:
    await r.wait_transition(TransitionKind.RECOVERED, within=2.0)
    await r.wait_for(lambda: r.engine.links()["lte"].state is LinkState.UP, within=2.0)
    assert r.engine.active is Choice.WIRED


# --------------------------------------------------------------------------- tests


def test_boot_comes_up_on_wired_with_lte_in_standby() -> None:
    async def main() -> None:
        async with rig() as r:
            t0 = now()
            await booted(r)
            _, boot, report = r.transitions[0]
            assert boot.to_uplink is Choice.WIRED and report.active == "wired"
            assert now() - t0 < 1.0  # two good rounds at 0.5 s
            assert r.routes.switches() == [("activate", "wired")]
            assert r.forwarding.applied == ["wired"]
            assert r.conntrack.flushed == []  # nothing was left
            assert ("ensure_present", ("wired", "lte")) in r.routes.calls
            assert r.engine.describe()["links"]["lte"]["role"] == "standby"
            assert r.errors == []

    simulate(main)


def test_rounds_start_on_the_interval_without_waiting_for_the_previous_one() -> None:
    async def main() -> None:
        async with rig() as r:
            await booted(r)
            r.net.mode["wan0"] = "blackhole"  # every round now takes its full 1.0 s
            t0 = now()
            await r.hold(2.0)
            starts = r.net.starts("wan0", after=t0)
            gaps = [b - a for a, b in itertools.pairwise(starts)]
            assert len(starts) == 4 and all(abs(g - 0.5) < 1e-6 for g in gaps), starts
            assert r.engine.describe()["links"]["wired"]["rounds_in_flight"] == 2

    simulate(main)


async def blackhole_failover(r: Rig, monitor: MonitorConfig, offset: float) -> tuple[float, float]:
    """Blackhole wired `offset` s from now (off the round schedule): (when, failover's
    time), the failover within `monitor`'s detection bounds."""
    await r.hold(offset)
    r.net.mode["wan0"] = "blackhole"
    t0 = now()
    failover = await r.wait_transition(TransitionKind.FAILOVER, within=5.0)
    at = next(at for at, t, _ in r.transitions if t is failover)
    best, worst = detection_time_bounds_s(monitor)
    assert best <= at - t0 <= worst + 0.05, at - t0
    return t0, at


def test_blackhole_fails_over_within_three_seconds() -> None:
    async def main() -> None:
        async with rig() as r:
            await booted(r)
            t0, at = await blackhole_failover(r, FAST_RECOVERY, 0.23)
            assert r.engine.active is Choice.LTE
            assert r.routes.switches()[-1] == ("activate", "lte")
            assert r.forwarding.applied[-1] == "lte"
            assert r.conntrack.flushed == ["wan0"]  # the uplink left, after the routes
            # LTE had been probed afresh before wired was declared down (wired suspect).
            assert any(t0 < s < at for s in r.net.starts("wwan0"))
            links = [(name, s.state) for _, name, s in r.links]
            assert ("wired", LinkState.DOWN) in links

    simulate(main)


QUIET = sequential_monitor(stable_s=3.0)


def test_a_quiet_line_is_probed_at_half_rate_until_a_round_is_late() -> None:
    async def main() -> None:
        async with rig(monitor=QUIET) as r:
            await booted(r)
            await r.hold(2.0)  # 5 clean rounds and more: quiet
            t0 = now()
            await r.hold(2.0)
            gaps = [b - a for a, b in itertools.pairwise(r.net.starts("wan0", after=t0))]
            assert gaps and all(abs(g - 0.4) < 1e-6 for g in gaps), gaps
            assert r.engine.describe()["links"]["wired"]["pace"]["quiet"] is True
            assert r.engine.describe()["links"]["wired"]["probe_interval_s"] == 0.4
            assert detection_time_bounds_s(QUIET) == pytest.approx((1.2, 1.6))
            t1, _ = await blackhole_failover(r, QUIET, 0.13)
            # the first round after the blackhole was late 0.1 s after its start: the
            # next one started 0.2 s after it, and so on at the full rate
            starts = r.net.starts("wan0", after=t1)
            gaps = [b - a for a, b in itertools.pairwise(starts)]
            assert len(gaps) >= 3 and all(abs(g - 0.2) < 1e-6 for g in gaps[:3]), gaps
            assert r.engine.describe()["links"]["wired"]["pace"]["quiet"] is False

    simulate(main)


@pytest.mark.parametrize(("mode", "latency_s"), [("dns-dead", 0.02), ("ok", 0.15)])
def test_a_line_that_misses_a_probe_or_answers_late_stays_at_the_full_rate(
        mode: str, latency_s: float) -> None:
    async def main() -> None:
        async with rig(monitor=QUIET) as r:
            r.net.latency_s = latency_s
            r.net.mode["wan0"] = mode
            await r.wait_for(lambda: r.engine.links()["wired"].usable, within=3.0)
            t0 = now()
            await r.hold(3.0)
            gaps = [b - a for a, b in itertools.pairwise(r.net.starts("wan0", after=t0))]
            assert gaps and all(abs(g - 0.2) < 1e-6 for g in gaps), gaps
            assert r.engine.describe()["links"]["wired"]["pace"]["quiet"] is False

    simulate(main)


def test_quiet_pacing_off_keeps_the_full_rate() -> None:
    async def main() -> None:
        async with rig(monitor=sequential_monitor(stable_s=3.0, quiet_interval_s=None)) as r:
            await booted(r)
            t0 = now()
            await r.hold(3.0)
            gaps = [b - a for a, b in itertools.pairwise(r.net.starts("wan0", after=t0))]
            assert gaps and all(abs(g - 0.2) < 1e-6 for g in gaps), gaps

    simulate(main)


def test_carrier_loss_fails_over_at_once() -> None:
    async def main() -> None:
        async with rig() as r:
            await booted(r)
            await r.hold(10.0)  # LTE is in sparse standby now
            r.carrier.set("wan0", False)
            took = await r.wait_for(lambda: TransitionKind.FAILOVER in r.kinds(), within=1.0)
            assert took < 0.05, took  # no rounds involved: the route change only
            assert r.transitions[-1][1].reason.endswith("carrier lost")
            assert r.engine.links()["wired"].carrier is False

    simulate(main)


async def closes(session: aiohttp.ClientSession, within: float = 1.0) -> None:
    async with asyncio.timeout(within):
        while not session.closed:
            await asyncio.sleep(0.01)


def test_kept_probe_connections_close_on_carrier_loss_and_when_the_engine_stops() -> None:
    """The engine owns the HTTP(S) probes' kept connections (probes.keep, #13)."""

    def kept_session(r: Rig, interface: str) -> aiohttp.ClientSession:
        options = r.net.options[interface]
        assert options is not None and options.connections is not None

        def make() -> Kept:
            return Kept(aiohttp.ClientSession(), KeptBytes(), StaticResolver("t", []))

        return options.connections.kept((interface, "https://t/"), make).session

    async def main() -> None:
        async with rig() as r:
            await booted(r)
            wired, lte = kept_session(r, "wan0"), kept_session(r, "wwan0")
            r.carrier.set("wan0", False)
            await closes(wired)
            assert not lte.closed
        await closes(lte)  # run() ended

    simulate(main)


def test_failback_only_after_the_stability_window() -> None:
    async def main() -> None:
        async with rig() as r:
            await booted(r)
            r.carrier.set("wan0", False)
            await r.wait_transition(TransitionKind.FAILOVER, within=1.0)
            await r.hold(5.0)
            r.carrier.set("wan0", True)
            t0 = now()
            failback = await r.wait_transition(TransitionKind.FAILBACK, within=10.0)
            took = now() - t0
            # stable_s (3 s of good rounds) to be up again, and failback_stable_s of good
            # rounds for the selector; the first good round lands ~0.5 s after carrier.
            assert 3.0 <= took <= 4.1, took
            assert "stable" in failback.reason
            assert r.engine.active is Choice.WIRED
            assert r.routes.switches()[-1] == ("activate", "wired")
            # the dead wired line's flows went at once; LTE (healthy) keeps its flows
            # for the grace period, so requests in flight finish, then they go too
            assert r.conntrack.flushed == ["wan0"]
            await r.hold(4.9)
            assert r.conntrack.flushed == ["wan0"]
            await r.hold(0.2)
            assert r.conntrack.flushed == ["wan0", "wwan0"]

    simulate(main)


def test_a_flapping_wired_line_restarts_the_window() -> None:
    async def main() -> None:
        async with rig() as r:
            await booted(r)
            r.net.mode["wan0"] = "blackhole"
            await r.wait_transition(TransitionKind.FAILOVER, within=5.0)
            for _ in range(3):  # good for 2 s, bad for 1 s: never 3 s stable
                r.net.mode["wan0"] = "ok"
                await r.hold(2.0)
                r.net.mode["wan0"] = "blackhole"
                await r.hold(1.0)
            assert TransitionKind.FAILBACK not in r.kinds()
            r.net.mode["wan0"] = "ok"
            await r.wait_transition(TransitionKind.FAILBACK, within=6.0)

    simulate(main)


def test_both_down_is_offline_mode() -> None:
    async def main() -> None:
        async with rig() as r:
            await booted(r)
            r.net.mode["wan0"] = r.net.mode["wwan0"] = "blackhole"
            offline = await r.wait_transition(TransitionKind.OFFLINE_MODE, within=8.0)
            assert r.engine.active is Choice.NONE
            assert r.engine.applied is Choice.NONE
            assert r.routes.switches()[-1] == ("deactivate_all", None)
            assert r.forwarding.applied[-1] is None  # the LAN is cut off
            assert offline.to_uplink is Choice.NONE
            # Both are probed at the full rate while offline, to see either come back.
            t0 = now()
            await r.hold(2.0)
            assert len(r.net.starts("wwan0", after=t0)) == 4
            r.net.mode["wwan0"] = "ok"
            recovered = await r.wait_transition(TransitionKind.RECOVERED, within=10.0)
            assert (recovered.to_uplink, r.engine.applied) == (Choice.LTE, Choice.LTE)

    simulate(main)


def test_lte_failure_while_active_tries_the_other_sim_first() -> None:
    calls: list[float] = []

    async def main() -> None:
        holder: list[Rig] = []

        async def switch_sim() -> bool:
            calls.append(now())
            await asyncio.sleep(5.0)  # the modem re-registers on the other operator
            holder[0].net.mode["wwan0"] = "ok"
            return True

        async with rig(switch_sim=switch_sim) as r:
            holder.append(r)
            await booted(r)
            r.carrier.set("wan0", False)
            await r.wait_transition(TransitionKind.FAILOVER, within=1.0)
            r.net.mode["wwan0"] = "blackhole"  # the same operator's LTE dies too
            await r.wait_for(lambda: bool(calls), within=5.0)
            assert r.engine.active is Choice.NONE  # decided...
            assert r.engine.applied is Choice.LTE  # ...but not applied while trying
            await r.wait_transition(TransitionKind.RECOVERED, within=15.0)
            assert (r.engine.active, r.engine.applied) == (Choice.LTE, Choice.LTE)
            # Offline mode was never applied: the LAN stayed on LTE throughout.
            assert ("deactivate_all", None) not in r.routes.calls
            assert None not in r.forwarding.applied
            assert r.engine.describe()["sim"]["switches"] == 1
            assert ("ensure_present", ("lte",)) in r.routes.calls

    simulate(main)
    assert len(calls) == 1


def test_a_sim_switch_that_does_not_help_ends_in_offline_mode() -> None:
    calls: list[float] = []

    async def main() -> None:
        async def switch_sim() -> bool:
            calls.append(now())
            await asyncio.sleep(2.0)
            return True  # switched, but the other operator is dead as well

        async with rig(switch_sim=switch_sim, sim_verdict_timeout_s=5.0) as r:
            await booted(r)
            r.carrier.set("wan0", False)
            await r.wait_transition(TransitionKind.FAILOVER, within=1.0)
            r.net.mode["wwan0"] = "blackhole"
            await r.wait_for(lambda: r.engine.applied is Choice.NONE, within=15.0)
            took = now() - calls[0]
            assert 7.0 <= took <= 7.2, took  # switch 2 s + verdict wait 5 s
            assert r.routes.switches()[-1] == ("deactivate_all", None)
            await r.hold(20.0)
            assert len(calls) == 1  # once per failure, not again and again

    simulate(main)


def test_without_a_second_sim_lte_failure_is_offline_mode() -> None:
    async def main() -> None:
        async with rig() as r:
            await booted(r)
            r.carrier.set("wan0", False)
            await r.wait_transition(TransitionKind.FAILOVER, within=1.0)
            r.net.mode["wwan0"] = "blackhole"
            t0 = now()
            await r.wait_transition(TransitionKind.OFFLINE_MODE, within=5.0)
            assert now() - t0 <= detection_time_bounds_s(FAST_RECOVERY)[1] + 0.05
            assert r.engine.applied is Choice.NONE
            assert r.conntrack.flushed[-1] == "wwan0"

    simulate(main)


def test_a_failing_switch_is_reported_and_retried() -> None:
    async def main() -> None:
        async with rig() as r:
            await booted(r)
            r.routes.fail_next = 3
            r.carrier.set("wan0", False)
            t0 = now()
            await r.wait_transition(TransitionKind.FAILOVER, within=10.0)
            took = now() - t0
            assert [type(e) for e in r.errors] == [RouteError] * 3
            assert "kernel says no" in str(r.errors[0])
            assert 0.5 + 1.0 + 2.0 <= took < 4.0, took  # backoff 0.5, 1, 2 s
            assert [c for c in r.routes.switches()[1:]] == [("activate", "lte")] * 4
            # The flush of the uplink left happened once, after the switch that worked.
            assert r.conntrack.flushed == ["wan0"]
            state = r.engine.describe()
            assert state["switch_failures"] == 3 and state["applied"] == "lte"
            assert "kernel says no" in state["last_error"]

    simulate(main)


def test_a_new_decision_supersedes_a_failing_switch() -> None:
    async def main() -> None:
        async with rig() as r:
            await booted(r)
            r.routes.fail_next = 1000  # LTE cannot be activated at all
            r.carrier.set("wan0", False)
            await r.wait_for(lambda: len(r.errors) >= 2, within=5.0)
            r.routes.fail_next = 0
            r.carrier.set("wan0", True)  # wired back, LTE still "active" for the selector
            r.routes.fail_next = 1000
            await r.hold(1.0)
            r.routes.fail_next = 0
            t = await r.wait_transition(TransitionKind.FAILBACK, within=10.0)
            assert r.engine.applied is Choice.WIRED and t.to_uplink is Choice.WIRED
            assert all(e for e in r.errors)

    simulate(main)


def test_dns_target_dead_is_degraded_not_down() -> None:
    async def main() -> None:
        async with rig() as r:
            await booted(r)
            r.net.mode["wan0"] = "dns-dead"
            await r.wait_for(lambda: r.engine.links()["wired"].state is LinkState.DEGRADED,
                             within=2.0)
            await r.hold(60.0)
            assert r.engine.active is Choice.WIRED
            assert r.kinds() == [TransitionKind.RECOVERED]

    simulate(main)


def test_lte_standby_is_probed_within_the_byte_budget() -> None:
    async def main() -> None:
        async with rig() as r:
            await booted(r)
            interval = r.engine.standby_interval_s
            # FakeNet: 80 bytes per probe, 3 probes; the documented estimate is larger.
            assert r.engine.lte_round_bytes == estimate_round_bytes(TARGETS) == 608
            assert interval == pytest.approx(standby_probe_interval_s(608))
            t0, bytes0 = now(), r.engine.standby_bytes
            await r.hold(3600.0)
            rounds = r.net.starts("wwan0", after=t0)
            assert abs(len(rounds) - 3600 / interval) <= 1, (len(rounds), interval)
            spent = r.engine.standby_bytes - bytes0
            assert spent == len(rounds) * 240
            month = spent * 24 * 30.4375
            assert month < 5_000_000 * 0.8, month
            state = r.engine.describe()
            assert state["lte_standby"]["full_rate"] is False
            json.dumps(state)  # JSON-ready

    simulate(main)


def test_lte_goes_to_full_rate_while_wired_is_suspect_and_back() -> None:
    async def main() -> None:
        async with rig() as r:
            await booted(r)
            await r.hold(30.0)
            r.net.mode["wan0"] = "blackhole"
            await r.wait_for(lambda: r.engine.links()["wired"].consecutive_failures == 2,
                             within=3.0)  # suspect, not down yet
            assert r.engine.links()["wired"].state is not LinkState.DOWN
            assert r.engine.describe()["lte_standby"]["full_rate"] is True
            await r.hold(0.0)
            assert r.net.starts("wwan0", after=now())  # an LTE round started at once
            r.net.mode["wan0"] = "ok"
            await r.hold(3.0)
            assert r.engine.describe()["lte_standby"]["full_rate"] is False
            assert r.engine.active is Choice.WIRED
            t0 = now()
            await r.hold(60.0)
            assert len(r.net.starts("wwan0", after=t0)) <= 1

    simulate(main)


def test_a_fixed_standby_interval_and_link_callbacks() -> None:
    async def main() -> None:
        async with rig(standby_interval_s=20.0) as r:
            await booted(r)
            t0 = now()
            await r.hold(100.0)
            assert len(r.net.starts("wwan0", after=t0)) == 5
            seen = [(name, s.state) for _, name, s in r.links]
            assert seen[:2] == [("wired", LinkState.UP), ("lte", LinkState.UP)] or \
                sorted(seen[:2]) == [("lte", LinkState.UP), ("wired", LinkState.UP)]
            assert r.conntrack.noted  # addresses remembered for later flushes

    simulate(main)


def test_a_broken_round_function_is_reported_not_an_outage() -> None:
    async def main() -> None:
        async with rig() as r:
            await booted(r)
            real = r.engine._round_fn

            async def broken(*args: Any, **kwargs: Any) -> Any:
                if args[1] == "wan0":
                    raise ProbeConfigError("timeout_s", 99, "bug")
                return await real(*args, **kwargs)

            r.engine._round_fn = broken
            await r.hold(5.0)
            assert r.errors and isinstance(r.errors[0], ProbeConfigError)
            assert r.engine.active is Choice.WIRED
            r.engine._round_fn = real
            await r.hold(1.0)
            assert r.engine.active is Choice.WIRED

    simulate(main)


def test_a_failing_carrier_watcher_is_restarted() -> None:
    async def main() -> None:
        async with rig() as r:
            await booted(r)
            assert r.carrier.opened == 1
            r.carrier.queue.put_nowait(OSError("netlink socket closed"))
            await r.wait_for(lambda: r.carrier.opened == 2, within=2.0)
            assert isinstance(r.errors[0], OSError)
            r.carrier.set("wan0", False)
            took = await r.wait_for(lambda: TransitionKind.FAILOVER in r.kinds(), within=1.0)
            assert took < 0.05

    simulate(main)


def test_configuration_is_checked() -> None:
    routes = FakeRoutes()
    with pytest.raises(RouteConfigError, match="a wired uplink is needed"):
        FailoverEngine([Uplink("lte", "wwan0")], TARGETS, routes)
    with pytest.raises(RouteConfigError, match="differs from the route controller"):
        FailoverEngine([Uplink("wired", "eth0")], TARGETS, routes)
    with pytest.raises(ProbeConfigError, match="exceeds the 1 probe targets"):
        FailoverEngine(UPLINKS, TARGETS[:1], routes)
    with pytest.raises(ProbeConfigError, match="at least one target"):
        FailoverEngine(UPLINKS, {"wired": TARGETS}, routes)


def test_wired_only_box() -> None:
    async def main() -> None:
        net = FakeNet()
        routes = FakeRoutes()
        seen: list[Transition] = []
        engine = FailoverEngine([UPLINKS[0]], [t.text for t in TARGETS], routes,
                                EngineConfig(watch_carrier=False),
                                monotonic=asyncio.get_running_loop().time, round_fn=net.round,
                                on_transition=lambda t, _: seen.append(t))
        async with asyncio.TaskGroup() as tg:
            task = tg.create_task(engine.run())
            await asyncio.sleep(2.0)
            assert [t.to_uplink for t in seen] == [Choice.WIRED]
            net.mode["wan0"] = "blackhole"
            await asyncio.sleep(4.0)
            assert [t.to_uplink for t in seen] == [Choice.WIRED, Choice.NONE]
            assert engine.describe()["lte_standby"] is None
            task.cancel()

    simulate(main)


def test_lte_carrier_back_is_confirmed_at_full_rate_then_standby_again() -> None:
    async def main() -> None:
        async with rig() as r:
            await booted(r)
            await r.hold(30.0)
            r.carrier.set("wwan0", False)  # the modem reconnects
            await r.wait_for(lambda: r.engine.links()["lte"].state is LinkState.DOWN, 1.0)
            await r.hold(5.0)
            r.carrier.set("wwan0", True)
            t0 = now()
            took = await r.wait_for(lambda: r.engine.links()["lte"].state is LinkState.UP,
                                    within=5.0)
            assert 3.0 <= took <= 3.6, took  # stable_s of rounds at 0.5 s, not 400 s apart
            assert r.engine.describe()["lte_standby"]["full_rate"] is False
            await r.hold(60.0)
            assert len(r.net.starts("wwan0", after=t0)) <= 9
            # A carrier that comes back on a dead line: one failed round, then standby.
            r.carrier.set("wwan0", False)
            await r.hold(1.0)
            r.net.mode["wwan0"] = "blackhole"
            r.carrier.set("wwan0", True)
            t1 = now()
            await r.hold(60.0)
            assert len(r.net.starts("wwan0", after=t1)) <= 3
            assert r.engine.active is Choice.WIRED

    simulate(main)
