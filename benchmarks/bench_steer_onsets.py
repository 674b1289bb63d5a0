"""Issue 13: the brownout steer in virtual time (pure CPU): how soon a 60 % brownout
steers, and how often a lossy line that should stay on wired would.

The real ``SteerPolicy`` on a ``ManualClock``, fed by the real
``failover.steering.loss_evidence`` from rounds of the line model of
tests/failover/test_steer.py (``_lossy_round``: 2 fresh probes per 0.2 s round, up to 4
attempts each, every attempt's round trip lost with the line's round-trip loss,
independently). Onsets: a clean line for 30 s, or 15 s at 36 % (the drill's loss phase,
20 % each way, which must not steer), then 60 % (37 % each way) until the steer. Rates:
steers an hour at constant loss with ``steer_min_interval_s`` 0 (the policy renewed after
each), so the raw tendency shows, not the interval's cap.

STOREBOX_BENCH_STEER_ONSETS (default 1000) onsets per case, STOREBOX_BENCH_STEER_HOURS
(default 4) hours per loss. Results: BENCHMARKS.md, "The steer judged by lost round trips".
"""

from __future__ import annotations

import os
import platform
import random
import statistics

from failover.steer import SteerConfig, SteerPolicy
from failover.steering import loss_evidence
from tests.failover.test_steer import _lossy_round
from tests.support.clock import ManualClock

ROUND_S = 0.2


def _onset(rng: random.Random, before: float, before_s: float) -> float | None:
    """Seconds from the 60 % onset to the steer; None when it steered before the onset."""
    clock = ManualClock()
    policy = SteerPolicy(SteerConfig(), clock.monotonic)
    for _ in range(round(before_s / ROUND_S)):
        clock.advance(ROUND_S)
        policy.add_round(*loss_evidence(_lossy_round(rng, before)), 20.0)
        if policy.evaluate(lte_healthy=True, wired_active=True) is not None:
            return None
    start = clock.monotonic()
    while clock.monotonic() - start < 120.0:
        clock.advance(ROUND_S)
        policy.add_round(*loss_evidence(_lossy_round(rng, 0.6)), 120.0)
        if policy.evaluate(lte_healthy=True, wired_active=True) is not None:
            break
    return clock.monotonic() - start


def _steers_per_hour(rng: random.Random, loss: float, hours: float) -> float:
    config = SteerConfig(steer_min_interval_s=0.0)
    clock = ManualClock()
    policy = SteerPolicy(config, clock.monotonic)
    steers = 0
    for _ in range(round(hours * 3600 / ROUND_S)):
        clock.advance(ROUND_S)
        policy.add_round(*loss_evidence(_lossy_round(rng, loss)), 20.0)
        change = policy.evaluate(lte_healthy=True, wired_active=True)
        if change is not None and change.steered:
            steers += 1
            policy = SteerPolicy(config, clock.monotonic)
    return steers / hours


def test_steer_onsets_and_rates() -> None:
    onsets = int(os.environ.get("STOREBOX_BENCH_STEER_ONSETS", "1000"))
    hours = float(os.environ.get("STOREBOX_BENCH_STEER_HOURS", "4"))
    rng = random.Random(2026)
    print(f"\nsteer in virtual time ({platform.python_version()}); {onsets} onsets a case")
    for before, before_s in ((0.0, 30.0), (0.36, 15.0)):
        taken = [_onset(rng, before, before_s) for _ in range(onsets)]
        early = sum(1 for t in taken if t is None)
        times = sorted(t for t in taken if t is not None)
        p95 = statistics.quantiles(times, n=20, method="inclusive")[18]
        print(f"  60 % onset after {before_s:.0f} s at {before:.0%}: median "
              f"{statistics.median(times):.1f} s, p95 {p95:.1f} s, max {times[-1]:.1f} s, "
              f"over 15 s {sum(1 for t in times if t > 15.0)}, steered before the onset "
              f"{early}")
        assert early <= onsets // 200 and times[-1] <= 15.0  # ≤ 0.5 %; the drill's limit
    for loss in (0.0, 0.1, 0.2, 0.3, 0.36, 0.4, 0.45):
        rate = _steers_per_hour(rng, loss, hours)
        print(f"  constant {loss:.0%} of round trips lost: {rate:.2f} steers an hour "
              f"({hours:g} h, interval 0)")
        if loss <= 0.36:  # the detector's design loss stays on wired (≤ 1 an hour)
            assert rate <= 1.0, loss
