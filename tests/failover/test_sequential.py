"""The sequential down test (CUSUM on failed probes, failover.sequential): tables, and
false alarms in virtual time (probe outcomes drawn from the loss model, no sockets)."""

from __future__ import annotations

import math
import random

import pytest

from failover.config import MonitorConfig, exchange_failure_probability
from failover.decision import (
    LinkMonitor,
    detection_time_bounds_s,
    make_detector,
    rounds_to_detect,
    simulate_burst_downs,
    simulate_false_downs,
)
from failover.errors import DecisionConfigError
from failover.link import LinkState, RoundSample
from failover.rounds import RoundsTest, false_down_rate_for
from failover.sequential import SequentialTest, sequential_monitor
from tests.support.clock import ManualClock

SEQ = sequential_monitor()
OLD = MonitorConfig()


def rounds(failed: int, n: int = 3) -> RoundSample:
    return RoundSample(n - failed, n, 2, None if failed == n else 20.0)


def up_monitor(clock: ManualClock, config: MonitorConfig = SEQ) -> LinkMonitor:
    m = LinkMonitor(config, monotonic=clock.monotonic)
    for _ in range(config.startup_rounds):
        clock.advance(config.round_interval_s)
        m.observe_round(rounds(0))
    assert m.state is LinkState.UP
    return m


def feed(m: LinkMonitor, clock: ManualClock, failed: list[int]) -> int | None:
    """Feed rounds every round_interval_s; the 1-based round at which the link went down."""
    for i, k in enumerate(failed, 1):
        clock.advance(m.config.round_interval_s)
        change = m.observe_round(rounds(k))
        if change is not None and change.new is LinkState.DOWN:
            return i
    return None


# --------------------------------------------------------------------------- arithmetic


def test_preset_and_its_arithmetic() -> None:
    assert (SEQ.round_interval_s, SEQ.probe_timeout_s, SEQ.attempts) == (0.2, 0.6, 4)
    t = SequentialTest(SEQ)
    assert t.p0 == pytest.approx(0.36**4)
    assert t.threshold == pytest.approx(math.log(18000 / 1e-6))  # 23.61
    assert [round(t.llr(k, 3), 2) for k in range(4)] == [-13.76, -5.1, 3.56, 12.23]
    # Lorden: at most rounds/h * e^-h false alarms per hour
    assert 18000 * math.exp(-t.threshold) == pytest.approx(1e-6)
    assert rounds_to_detect(SEQ) == 4 and rounds_to_detect(OLD) == 4
    # the first failing round starts within the quiet interval (0.4 s), then full rate
    assert detection_time_bounds_s(SEQ) == pytest.approx((1.2, 1.6))
    assert detection_time_bounds_s(sequential_monitor(quiet_interval_s=None)) == \
        pytest.approx((1.2, 1.4))
    assert detection_time_bounds_s(OLD) == pytest.approx((2.5, 3.0))
    # without the duration guard the evidence alone needs 2 rounds
    assert rounds_to_detect(sequential_monitor(min_outage_s=0.0)) == 2
    assert isinstance(make_detector(OLD), RoundsTest)
    assert isinstance(make_detector(SEQ), SequentialTest)


@pytest.mark.parametrize(("overrides", "field"), [
    ({"detector": "bogus"}, "detector"),
    ({"design_loss": 0.0}, "design_loss"),
    ({"design_loss": 1.0}, "design_loss"),
    ({"dead_probe_failure": 0.01}, "dead_probe_failure"),  # below p0 = 0.0168
    ({"dead_probe_failure": 1.0}, "dead_probe_failure"),
    ({"false_alarms_per_hour": 0.0}, "false_alarms_per_hour"),
    ({"min_outage_s": -1.0}, "min_outage_s"),
])
def test_bad_settings_are_refused(overrides: dict[str, object], field: str) -> None:
    with pytest.raises(DecisionConfigError, match=field):
        sequential_monitor(**overrides)


# --------------------------------------------------------------------------- the monitor


@pytest.mark.parametrize(("name", "failed", "down_at"), [
    ("blackhole: evidence after 2 rounds, the guard wants the 4th", [3] * 10, 4),
    ("two of three targets dead", [2] * 10, 7),
    ("one target dead never fails over", [1] * 200, None),
    ("20 % loss at its worst: k=2 now and then", [2, 1, 2, 0, 2, 1] * 30, None),
    ("a 0.4 s blackout (2 rounds) is ridden out", [3, 3, 0, 0, 3, 3, 0, 0] * 10, None),
    ("three dead rounds then an answer: evidence kept, guard not met", [3, 3, 3, 0, 0], None),
    ("a stray answer in a blackhole does not reset it", [3, 3, 2, 3, 3], 4),
    ("blackhole after a partial round", [2, 3, 3, 3, 3], 4),
])
def test_sequential_table(name: str, failed: list[int], down_at: int | None) -> None:
    clock = ManualClock()
    m = up_monitor(clock)
    assert feed(m, clock, failed) == down_at, name
    if down_at is not None:
        assert "sequential test" in m.status().reason
        assert m.status().evidence == 0.0  # starts afresh once back up


def test_guard_off_two_dead_rounds_suffice() -> None:
    clock = ManualClock()
    m = up_monitor(clock, sequential_monitor(min_outage_s=0.0))
    assert feed(m, clock, [3, 3]) == 2


def test_guard_uses_the_clock_not_the_round_count() -> None:
    """Rounds arriving late (a loaded box) need fewer of them; the span is what counts."""
    clock = ManualClock()
    m = up_monitor(clock)
    for i in range(3):
        clock.advance(0.3)
        m.observe_round(rounds(3))
        assert (m.state is LinkState.DOWN) == (i == 2)
    assert m.state is LinkState.DOWN  # spans 0.6 s >= 0.5 s after 3 rounds


def test_suspect_after_one_dead_round_and_carrier_loss_resets() -> None:
    clock = ManualClock()
    m = up_monitor(clock)
    assert not m.status().suspect
    feed(m, clock, [3])
    assert not m.status().suspect and m.status().evidence == pytest.approx(12.23, abs=0.01)
    feed(m, clock, [3])  # 2 of the 4 rounds a blackhole needs
    status = m.status()
    assert status.suspect and status.state is LinkState.DEGRADED  # not down yet
    m.carrier(False)
    after = m.status()
    assert after.state is LinkState.DOWN and after.evidence == 0.0 and not after.suspect


def test_rounds_detector_unchanged() -> None:
    clock = ManualClock()
    m = up_monitor(clock, OLD)
    assert feed(m, clock, [3, 3, 3, 0, 3, 3, 3, 3]) == 8
    assert m.status().reason == "4 consecutive failed rounds"
    clock2 = ManualClock()
    m2 = up_monitor(clock2, OLD)
    feed(m2, clock2, [2, 2])  # 2 of 3 failed: quorum missed
    assert m2.status().suspect and m2.status().consecutive_failures == 2


# --------------------------------------------------------------------------- virtual time


def test_ten_thousand_hours_of_20_percent_loss_no_false_failover() -> None:
    """18e7 rounds at 20 % independent loss each way (the design point): 0 downs."""
    assert simulate_false_downs(SEQ, 0.20, 10_000, random.Random(13)) == 0
    # the threshold alone (no duration guard) keeps it: Lorden's bound, <= 0.01 expected
    bare = sequential_monitor(min_outage_s=0.0)
    assert simulate_false_downs(bare, 0.20, 10_000, random.Random(15)) == 0
    # and below the design point (the bound holds for any smaller loss)
    assert simulate_false_downs(SEQ, 0.10, 10_000, random.Random(14)) == 0


def test_the_simulation_can_see_false_alarms() -> None:
    """The same simulation with a threshold meant for 1,000 false alarms an hour finds
    them (so the 0 above is not a simulator that never fires)."""
    loose = sequential_monitor(false_alarms_per_hour=1000.0, min_outage_s=0.0)
    found = simulate_false_downs(loose, 0.20, 10, random.Random(1))
    assert 100 <= found <= 10_000


def test_simulation_matches_the_closed_form_for_rounds() -> None:
    """The rounds detector at 40 %: simulated rate ≈ 7200·(1-r)·r⁴ ≈ 5/h."""
    expected = false_down_rate_for(OLD, 0.40)
    assert expected == pytest.approx(5.0, rel=0.05)
    found = simulate_false_downs(OLD, 0.40, 400, random.Random(40)) / 400
    assert found == pytest.approx(expected, rel=0.1)


def test_simulation_skipping_is_exact() -> None:
    """Against a brute-force round-by-round run of the same test (loose threshold)."""
    loose = sequential_monitor(false_alarms_per_hour=20_000.0, min_outage_s=0.0)
    hours = 6.0
    rng = random.Random(5)
    p = exchange_failure_probability(0.20, loose.attempts)
    test = make_detector(loose)
    brute = 0
    for r in range(int(hours * 3600 / loose.round_interval_s)):
        k = sum(rng.random() < p for _ in range(3))
        if test.observe(k, 3, r * loose.round_interval_s):
            brute += 1
            test.reset()
    skipped = sum(simulate_false_downs(loose, 0.20, hours, random.Random(s)) for s in range(5)) / 5
    assert brute > 50
    assert skipped == pytest.approx(brute, rel=0.25)


def test_forty_percent_loss_rate_stated_in_the_docs() -> None:
    """≈ 0.038 false failovers an hour at 40 % each way with rounds in start order (docs;
    0.082 in the engine's completion order, benchmarks/bench_false_failovers.py); the
    rounds detector ≈ 5."""
    found = simulate_false_downs(SEQ, 0.40, 1_000, random.Random(7)) / 1_000
    assert 0.015 <= found <= 0.08
    assert found < false_down_rate_for(OLD, 0.40) / 50


def test_bursty_loss() -> None:
    """Gilbert-Elliott bad periods (total loss): short ones never fail over; long ones do
    about as often as e^(-0.96 s / mean) (docs), the rounds detector later (2.3 s)."""
    assert simulate_burst_downs(SEQ, 20_000, 0.05, random.Random(1)) == 0
    assert simulate_burst_downs(SEQ, 20_000, 0.10, random.Random(2)) <= 5  # e^-9.6 * 2e4 = 1.3
    share = simulate_burst_downs(SEQ, 5_000, 0.5, random.Random(3)) / 5_000
    assert share == pytest.approx(math.exp(-0.96 / 0.5), rel=0.2)
    old = simulate_burst_downs(OLD, 5_000, 0.5, random.Random(3), retry_after_s=0.3) / 5_000
    assert old < share / 5
    # partial bad state (90 % loss per packet) for half a second: still no failover
    assert simulate_burst_downs(SEQ, 5_000, 0.1, random.Random(4), bad_loss=0.9) == 0
