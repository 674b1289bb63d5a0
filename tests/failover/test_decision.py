"""Pure decision logic under an injected clock: deterministic and instant."""

from __future__ import annotations

import heapq
import random
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from failover.budget import (
    SECONDS_PER_MONTH,
    adaptive_standby_interval_s,
    monthly_probe_bytes,
    standby_probe_interval_s,
)
from failover.config import MonitorConfig, SelectorConfig, exchange_failure_probability
from failover.decision import LinkMonitor, detection_time_bounds_s
from failover.errors import DecisionConfigError, FailoverError
from failover.link import LinkState, LinkStatus, RoundSample, Transition, TransitionKind, Uplink
from failover.rounds import false_down_rate_for, false_down_rate_per_hour, round_failure_probability
from failover.selector import UplinkSelector
from tests.support.clock import ManualClock

CFG = MonitorConfig()
GOOD = RoundSample(3, 3, 2, 20.0)
PARTIAL = RoundSample(2, 3, 2, 20.0)
BAD = RoundSample(0, 3, 2)


def up_monitor(clock: ManualClock, config: MonitorConfig = CFG) -> LinkMonitor:
    m = LinkMonitor(config, monotonic=clock.monotonic)
    for _ in range(config.startup_rounds):
        clock.advance(config.round_interval_s)
        m.observe_round(GOOD)
    assert m.status().state is LinkState.UP
    return m


# --------------------------------------------------------------------------- link monitor


def test_defaults_and_their_analysis() -> None:
    assert (CFG.round_interval_s, CFG.probe_timeout_s, CFG.targets, CFG.quorum) == (0.5, 1.0, 3, 2)
    assert (CFG.attempts, CFG.down_after_rounds, CFG.stable_s) == (3, 4, 30.0)
    assert detection_time_bounds_s(CFG) == (2.5, 3.0)
    p = exchange_failure_probability(0.2, 3)
    assert p == pytest.approx(0.36**3)
    r = round_failure_probability(p, 3, 2)
    assert r == pytest.approx(3 * p**2 * (1 - p) + p**3)
    rate = false_down_rate_for(CFG, 0.2)
    assert rate == pytest.approx(7200 * (1 - r) * r**4)
    assert rate < 2e-5  # per hour of continuous 20 % loss: once in ~10 years
    # the retries are what makes this work: single attempts would fail over all the time
    no_retry = false_down_rate_per_hour(round_failure_probability(0.36, 3, 2), 4, 0.5)
    assert no_retry > 10


def test_starts_down_and_comes_up_after_the_startup_rounds() -> None:
    clock = ManualClock()
    m = LinkMonitor(CFG, monotonic=clock.monotonic)
    assert m.status().state is LinkState.DOWN and not m.status().known
    clock.advance(0.5)
    assert m.observe_round(GOOD) is None
    clock.advance(0.5)
    change = m.observe_round(GOOD)
    assert change is not None and (change.old, change.new) == (LinkState.DOWN, LinkState.UP)
    assert change.at == clock.monotonic() and m.status().since == clock.monotonic()


@dataclass(order=True)
class _Done:
    at: float
    seq: int
    outcome: RoundSample = field(compare=False)


def run_rounds(
    monitor: LinkMonitor,
    clock: ManualClock,
    start: float,
    end: float,
    outcome_at_start: object,
    rtt: float = 0.02,
) -> float | None:
    """Rounds start every interval, each finishing at start+rtt (ok) or start+timeout
    (failed), fed to the monitor in completion order. Returns when it went down."""
    cfg = monitor.config
    pending: list[_Done] = []
    seq = 0
    t = start
    down_at = None
    while t < end or pending:
        next_start = t if t < end else float("inf")
        if pending and pending[0].at <= next_start:
            done = heapq.heappop(pending)
            clock.monotonic_s = done.at
            change = monitor.observe_round(done.outcome)
            if change is not None and change.new is LinkState.DOWN and down_at is None:
                n = monitor.config.down_after_rounds
                assert change.reason == f"{n} consecutive failed rounds"
                down_at = done.at
            continue
        ok = outcome_at_start(t)  # type: ignore[operator]
        outcome = GOOD if ok else BAD
        heapq.heappush(pending, _Done(t + (rtt if ok else cfg.probe_timeout_s), seq, outcome))
        seq += 1
        t += cfg.round_interval_s
    return down_at


@pytest.mark.parametrize("phase", [i / 20 for i in range(10)])
def test_a_blackhole_is_down_within_three_seconds(phase: float) -> None:
    clock = ManualClock(monotonic=0.0)
    m = up_monitor(clock)
    blackhole = 100.0 + phase  # rounds start on the half second; try every phase
    down_at = run_rounds(m, clock, 2.0, 110.0, lambda t: t + 0.02 < blackhole)
    assert down_at is not None
    best, worst = detection_time_bounds_s(CFG)
    assert best - 0.05 <= down_at - blackhole <= worst
    assert m.status().state is LinkState.DOWN


def test_carrier_loss_is_down_at_once_and_recovery_needs_the_window() -> None:
    clock = ManualClock()
    m = up_monitor(clock)
    clock.advance(0.25)
    change = m.carrier(False)
    assert change is not None and change.new is LinkState.DOWN and change.at == clock.monotonic()
    assert change.reason == "carrier lost"
    clock.advance(1)
    assert m.observe_round(GOOD) is None  # stale answers from before the loss are ignored
    assert m.status().good_since is None
    assert m.carrier(True) is None and m.status().state is LinkState.DOWN
    for _ in range(60):  # the first good round starts the window; 29.5 s after it...
        clock.advance(0.5)
        m.observe_round(GOOD)
        assert m.status().state is LinkState.DOWN
    assert "recovering" in m.status().reason
    clock.advance(0.5)
    change = m.observe_round(GOOD)  # ...and 30 s after it
    assert change is not None and change.new is LinkState.UP


def test_a_failed_round_restarts_the_stability_window() -> None:
    clock = ManualClock()
    m = up_monitor(clock)
    for _ in range(4):
        clock.advance(0.5)
        m.observe_round(BAD)
    assert m.status().state is LinkState.DOWN
    clock.advance(0.5)
    m.observe_round(GOOD)
    first_good = clock.monotonic()
    clock.advance(25)
    m.observe_round(GOOD)
    clock.advance(0.5)
    m.observe_round(BAD)  # a flap: not enough to matter while up, but we are recovering
    clock.advance(0.5)
    m.observe_round(GOOD)
    restart = clock.monotonic()
    clock.advance(first_good + 30 - clock.monotonic() + 1)
    m.observe_round(GOOD)
    assert m.status().state is LinkState.DOWN
    clock.monotonic_s = restart + 30
    m.observe_round(GOOD)
    assert m.status().state is not LinkState.DOWN


def test_single_failed_rounds_only_degrade() -> None:
    clock = ManualClock()
    m = up_monitor(clock)
    for _ in range(3):
        clock.advance(0.5)
        m.observe_round(BAD)
    assert m.status().state is LinkState.DEGRADED
    assert m.status().consecutive_failures == 3
    clock.advance(0.5)
    m.observe_round(GOOD)
    for _ in range(3):
        clock.advance(0.5)
        m.observe_round(BAD)
    assert m.status().state is LinkState.DEGRADED  # 6 failed rounds, never 4 in a row
    for _ in range(CFG.quality_rounds):
        clock.advance(0.5)
        m.observe_round(GOOD)
    assert m.status().state is LinkState.UP  # the window forgot the failures


def test_partial_failures_and_high_latency_degrade() -> None:
    clock = ManualClock()
    m = up_monitor(clock)
    for _ in range(CFG.quality_rounds):
        clock.advance(0.5)
        m.observe_round(PARTIAL)  # quorum met, one target of three failing
    assert m.status().state is LinkState.DEGRADED
    assert "probe loss 33%" in m.status().reason
    m2 = up_monitor(clock)
    for _ in range(CFG.quality_rounds):
        clock.advance(0.5)
        m2.observe_round(RoundSample(3, 3, 2, 450.0))
    assert m2.status().state is LinkState.DEGRADED
    assert m2.status().reason == "median latency 450ms"
    assert m2.status().median_latency_ms == 450.0


def simulate_loss(rng: random.Random, loss: float, config: MonitorConfig) -> RoundSample:
    """One round at independent per-packet loss: each probe gets `attempts` exchanges."""
    ok = 0
    for _ in range(config.targets):
        for _ in range(config.attempts):
            if rng.random() >= loss and rng.random() >= loss:  # request and answer
                ok += 1
                break
    return RoundSample(ok, config.targets, config.quorum, 20.0 if ok else None)


def test_an_hour_of_twenty_percent_random_loss_never_goes_down() -> None:
    rng = random.Random(2021)
    rounds = [simulate_loss(rng, 0.2, CFG) for _ in range(int(3600 / CFG.round_interval_s))]
    failed = sum(not r.ok for r in rounds)
    lost = sum(r.attempted - r.succeeded for r in rounds) / (3 * len(rounds))
    assert 0.035 < lost < 0.06  # ~0.36**3 = 4.7 % of probes fail
    assert 20 < failed < 80  # ~0.63 % of rounds fail: the loss is really exercised
    clock = ManualClock(monotonic=0.0)
    m = up_monitor(clock)
    states = set()
    for r in rounds:
        clock.advance(CFG.round_interval_s)
        m.observe_round(r)
        states.add(m.state)
    assert LinkState.DOWN not in states
    assert LinkState.DEGRADED in states  # it is a bad line, and we say so
    # the same hour with a hair trigger (down after one failed round) would have failed over
    hair = up_monitor(clock, MonitorConfig(down_after_rounds=1))
    went_down = False
    for r in rounds:
        clock.advance(CFG.round_interval_s)
        hair.observe_round(r)
        went_down |= hair.status().state is LinkState.DOWN
    assert went_down


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"round_interval_s": 0}, "round_interval_s"),
        ({"quorum": 4}, "quorum"),
        ({"down_after_rounds": 0}, "down_after_rounds"),
        ({"stable_s": -1}, "stable_s"),
        ({"degraded_loss": 1.5}, "degraded_loss"),
        ({"attempts": True}, "attempts"),
    ],
)
def test_bad_monitor_config_is_refused(kwargs: dict[str, float], field: str) -> None:
    with pytest.raises(DecisionConfigError) as info:
        MonitorConfig(**kwargs)  # type: ignore[arg-type]
    assert isinstance(info.value, FailoverError)
    assert info.value.field == field
    assert repr(next(iter(kwargs.values()))) in str(info.value)


# --------------------------------------------------------------------------- selector


class Box:
    """Two monitors and a selector on one fake clock."""

    def __init__(self, sel: SelectorConfig | None = None, booted: bool = True) -> None:
        self.clock = ManualClock()
        self.wired = LinkMonitor(CFG, monotonic=self.clock.monotonic)
        self.lte = LinkMonitor(CFG, monotonic=self.clock.monotonic)
        self.sel = UplinkSelector(sel, monotonic=self.clock.monotonic)
        self.transitions: list[Transition] = []
        if booted:
            self.step(GOOD, GOOD, n=CFG.startup_rounds)
            assert self.sel.active is Uplink.WIRED

    def step(self, wired: RoundSample | None, lte: RoundSample | None, n: int = 1) -> None:
        for _ in range(n):
            self.clock.advance(CFG.round_interval_s)
            if wired is not None:
                self.wired.observe_round(wired)
            if lte is not None:
                self.lte.observe_round(lte)
            self.update()

    def active(self) -> Uplink:
        return self.sel.active

    def update(self) -> None:
        t = self.sel.update(self.wired.status(), self.lte.status())
        if t is not None:
            self.transitions.append(t)


def test_boot_prefers_wired_and_waits_a_little_for_it() -> None:
    box = Box(booted=False)
    box.step(None, GOOD, n=2)  # LTE answers first; wired has no verdict yet
    assert box.active() is Uplink.NONE
    box.step(GOOD, GOOD, n=2)
    assert box.active() is Uplink.WIRED
    (t,) = box.transitions
    assert (t.kind, t.from_uplink, t.to_uplink) == (TransitionKind.RECOVERED, Uplink.NONE,
                                                     Uplink.WIRED)
    late = Box(booted=False)
    late.step(None, GOOD, n=int(5 / 0.5))  # no wired verdict within the grace: take LTE
    assert late.active() is Uplink.LTE


def test_failover_when_wired_is_down_and_lte_healthy() -> None:
    box = Box()
    assert box.sel.lte_role(box.lte.status()) == "standby"
    box.step(BAD, GOOD, n=4)
    assert box.active() is Uplink.LTE
    t = box.transitions[-1]
    assert (t.kind, t.from_uplink, t.to_uplink) == (TransitionKind.FAILOVER, Uplink.WIRED,
                                                     Uplink.LTE)
    assert t.reason == "wired down: 4 consecutive failed rounds"
    assert t.at == box.clock.monotonic() and box.sel.since == t.at
    assert box.sel.lte_role(box.lte.status()) == "up"


def test_flapping_wired_does_not_fail_back_before_the_window() -> None:
    box = Box()
    box.step(BAD, GOOD, n=4)
    assert box.active() is Uplink.LTE
    for _ in range(5):  # good for 20 s, one bad round, again and again
        box.step(GOOD, GOOD, n=40)
        box.step(BAD, GOOD)
        assert box.active() is Uplink.LTE
    box.step(GOOD, GOOD, n=60)  # 29.5 s since the first good round
    assert box.active() is Uplink.LTE
    box.step(GOOD, GOOD)  # 30 s: fail back
    assert box.active() is Uplink.WIRED
    t = box.transitions[-1]
    assert t.kind is TransitionKind.FAILBACK and t.reason.startswith("wired stable for 30.0s")


def test_carrier_flaps_also_restart_the_window() -> None:
    box = Box()
    box.wired.carrier(False)
    box.update()
    assert box.active() is Uplink.LTE  # carrier loss fails over without waiting for rounds
    box.wired.carrier(True)
    box.step(GOOD, GOOD, n=50)
    box.wired.carrier(False)
    box.wired.carrier(True)
    box.step(GOOD, GOOD, n=60)
    assert box.active() is Uplink.LTE
    box.step(GOOD, GOOD)
    assert box.active() is Uplink.WIRED


def test_both_down_is_offline_mode_and_either_coming_back_recovers() -> None:
    box = Box()
    box.step(BAD, BAD, n=4)
    assert box.active() is Uplink.NONE
    t = box.transitions[-1]
    assert (t.kind, t.from_uplink, t.to_uplink) == (TransitionKind.OFFLINE_MODE, Uplink.WIRED,
                                                     Uplink.NONE)
    assert "wired down" in t.reason and "lte down" in t.reason
    box.step(BAD, GOOD, n=60)
    assert box.active() is Uplink.NONE  # LTE failed before: it too must be stable
    box.step(BAD, GOOD)
    assert box.active() is Uplink.LTE
    assert box.transitions[-1].kind is TransitionKind.RECOVERED


def test_lte_failing_while_active_is_offline_mode() -> None:
    box = Box()
    box.step(BAD, GOOD, n=4)
    assert box.active() is Uplink.LTE
    box.step(BAD, BAD, n=4)
    assert box.active() is Uplink.NONE
    t = box.transitions[-1]
    assert (t.kind, t.from_uplink) == (TransitionKind.OFFLINE_MODE, Uplink.LTE)


def test_lte_failing_while_wired_is_back_fails_back_without_waiting() -> None:
    box = Box(SelectorConfig(failback_stable_s=120))
    box.step(BAD, GOOD, n=4)
    box.step(GOOD, GOOD, n=70)  # wired up again (35 s), selector wants 120 s
    assert box.wired.state is LinkState.UP and box.active() is Uplink.LTE
    box.lte.carrier(False)
    box.update()
    assert box.active() is Uplink.WIRED
    assert box.transitions[-1].reason.startswith("lte down: carrier lost")


def test_bad_selector_config_is_refused() -> None:
    with pytest.raises(DecisionConfigError, match="failback_stable_s=-1"):
        SelectorConfig(failback_stable_s=-1)


# --------------------------------------------------------------------------- properties

SMALL = MonitorConfig(stable_s=10.0)
SEL = SelectorConfig(failback_stable_s=10.0, startup_grace_s=2.0)

events = st.lists(
    st.tuples(
        st.sampled_from(["wired", "lte"]),
        st.sampled_from(["ok", "ok", "ok", "partial", "fail", "carrier_down", "carrier_up"]),
        st.sampled_from([0.0, 0.5, 0.5, 1.0, 3.0]),
    ),
    max_size=300,
)


@settings(max_examples=150, deadline=None)
@given(events)
def test_never_fail_back_before_wired_has_been_good_for_the_window(
    steps: list[tuple[str, str, float]],
) -> None:
    clock = ManualClock(monotonic=0.0)
    mon = {"wired": LinkMonitor(SMALL, monotonic=clock.monotonic),
           "lte": LinkMonitor(SMALL, monotonic=clock.monotonic)}
    sel = UplinkSelector(SEL, monotonic=clock.monotonic)
    carrier = {"wired": True, "lte": True}
    # reference model, independent of the implementation
    good_since: dict[str, float | None] = {"wired": None, "lte": None}
    failures = {"wired": 0, "lte": 0}
    ever_up = {"wired": False, "lte": False}
    for link, what, dt in steps:
        clock.advance(dt)
        before = mon[link].state
        if what.startswith("carrier"):
            up = what == "carrier_up"
            mon[link].carrier(up)
            if not up:
                good_since[link] = None
                failures[link] = 0
            carrier[link] = up
        elif carrier[link]:
            sample = {"ok": GOOD, "partial": PARTIAL, "fail": BAD}[what]
            mon[link].observe_round(sample)
            if sample.ok:
                failures[link] = 0
                if good_since[link] is None:
                    good_since[link] = clock.monotonic()
            else:
                failures[link] += 1
                good_since[link] = None
        after = mon[link].state
        # down only for a carrier loss or N failed rounds in a row
        if before is not LinkState.DOWN and after is LinkState.DOWN:
            assert what == "carrier_down" or failures[link] >= SMALL.down_after_rounds
        # back from a failure only after the stability window of good rounds
        if before is LinkState.DOWN and after is not LinkState.DOWN and ever_up[link]:
            since = good_since[link]
            assert since is not None and clock.monotonic() - since >= SMALL.stable_s
        ever_up[link] |= after is not LinkState.DOWN

        wired, lte = mon["wired"].status(), mon["lte"].status()
        t = sel.update(wired, lte)
        if t is not None and t.kind is TransitionKind.FAILBACK and lte.usable:
            since = good_since["wired"]
            assert since is not None and clock.monotonic() - since >= SEL.failback_stable_s
        # the choice is always consistent with the links' states
        if sel.active is Uplink.WIRED:
            assert wired.usable
        elif sel.active is Uplink.LTE:
            assert lte.usable
        elif wired.usable:
            raise AssertionError("offline although wired is usable")
        elif lte.usable:
            assert not sel.history and clock.monotonic() < SEL.startup_grace_s


def _status(state: LinkState, good_since: float | None) -> LinkStatus:
    return LinkStatus(state, 0.0, "test", True, True, good_since, 0, 0.0, 20.0)


@given(
    stable_for=st.floats(0, 100, allow_nan=False),
    window=st.floats(0, 100, allow_nan=False),
)
def test_selector_failback_threshold(stable_for: float, window: float) -> None:
    clock = ManualClock(monotonic=0.0)
    sel = UplinkSelector(SelectorConfig(failback_stable_s=window), monotonic=clock.monotonic)
    sel.update(_status(LinkState.DOWN, None), _status(LinkState.UP, 0.0))
    assert sel.active is Uplink.LTE
    t = sel.update(_status(LinkState.UP, -stable_for), _status(LinkState.UP, 0.0))
    assert (t is not None) == (stable_for >= window)


# --------------------------------------------------------------------------- LTE budget


@pytest.mark.parametrize("per_round", [88, 230, 620, 5000])
def test_standby_interval_keeps_the_month_under_budget(per_round: int) -> None:
    interval = standby_probe_interval_s(per_round)
    assert monthly_probe_bytes(per_round, interval) == pytest.approx(0.8 * 5_000_000)
    assert monthly_probe_bytes(per_round, interval * 0.9) > 0.8 * 5_000_000


def test_standby_interval_examples() -> None:
    assert standby_probe_interval_s(88) == pytest.approx(57.86, abs=0.01)
    assert standby_probe_interval_s(230) == pytest.approx(151.2, abs=0.1)
    assert standby_probe_interval_s(1, min_interval_s=5.0) == 5.0
    with pytest.raises(DecisionConfigError, match="bytes_per_round=0"):
        standby_probe_interval_s(0)
    with pytest.raises(DecisionConfigError, match="headroom=0"):
        standby_probe_interval_s(100, headroom=0)


def test_adaptive_interval_spends_what_is_left_evenly() -> None:
    half = SECONDS_PER_MONTH / 2
    on_track = adaptive_standby_interval_s(2_500_000, half, 250)
    assert on_track == pytest.approx(half / 10_000)
    overspent = adaptive_standby_interval_s(4_000_000, half, 250)
    assert overspent > on_track * 2
    assert adaptive_standby_interval_s(4_999_900, half, 250) == 3600.0  # exhausted
    assert adaptive_standby_interval_s(0, 0, 1) == 10.0  # clamped to the minimum
