"""The rounds down test (``detector = "rounds"``; LTE's test in every case, its probes
are billed; the wired line's default is ``failover.sequential``): down after
``down_after_rounds`` consecutive failed rounds (the model and its defaults:
``failover.decision``).

Time to detect a blackhole (link up, nothing passes): the first round started
after the blackhole fails at its deadline, and the 4th at
``(N-1)*I + T`` after it started, so detection takes between
``(N-1)*I + T = 2.5 s`` (blackhole just before a round starts) and
``N*I + T = 3.0 s`` (just after), see ``decision.detection_time_bounds_s``.

False alarms at 20 % random loss (each direction, independent per packet):
one exchange survives with 0.8² = 0.64, so a probe with 3 attempts fails with
p = 0.36³ = 0.0467. A round (3 targets, quorum 2) fails with
3p²(1-p) + p³ = 0.00634. Going down needs 4 failed rounds in a row: r⁴ = 1.6e-9
per round; at 7200 rounds/hour that is ≈ 1.15e-5 false failovers per hour, about
one per 10 years of *continuous* 20 % loss (``false_down_rate_for``). Without
retries (p = 0.36) the same scheme would fail over ~39 times an hour; with one
of the three targets dead for good (quorum 2 of the 2 left) ~0.45 times an
hour — the link shows ``degraded`` then (loss ≥ 33 %), fix the target list.
With quorum 1 the rate is ~8e-13/hour, but one target still answering (say
the ISP's own resolver) would then hide an outage.
The arithmetic assumes independent loss; bursty loss is worse — a 3 s burst
of total loss *is* an outage by our definition and fails over by design.
HTTPS targets need several round trips and fail more often under loss than
the single-exchange figure: with one HTTPS target among three (some 7 packets an
attempt: the probe fails with 0.79³ = 0.49 at 20 % loss) a round fails with
0.49·(1-(1-p)²) + 0.51·p² = 0.046 and the rate is 7200·(1-r)·r⁴ ≈ 0.03 an hour
(``benchmarks/bench_false_failovers.py``: 307 in 10,000 simulated hours; the
sequential test: 0).
"""

from __future__ import annotations

import math

from failover.config import MonitorConfig, check_count, check_positive, exchange_failure_probability
from failover.errors import DecisionConfigError

__all__ = [
    "RoundsTest",
    "false_down_rate_for",
    "false_down_rate_per_hour",
    "round_failure_probability",
]


class RoundsTest:
    """Down after ``down_after_rounds`` consecutive failed rounds (quorum not met)."""

    def __init__(self, config: MonitorConfig) -> None:
        self.config = config
        self.failures = 0

    @property
    def at_rest(self) -> bool:
        return self.failures == 0

    @property
    def evidence(self) -> float:
        return float(self.failures)

    @property
    def suspect(self) -> bool:
        return self.failures >= max(1, self.config.down_after_rounds // 2)

    def moves(self, failed: int, attempted: int) -> bool:
        """Whether such a round moves the test away from rest."""
        return attempted - failed < self.config.quorum

    def observe(self, failed: int, attempted: int, now: float) -> bool:
        """Feed one round; True when the uplink is to be declared down."""
        self.failures = self.failures + 1 if self.moves(failed, attempted) else 0
        return self.failures >= self.config.down_after_rounds

    def reason(self) -> str:
        return f"{self.failures} consecutive failed rounds"

    def reset(self) -> None:
        self.failures = 0


def round_failure_probability(probe_failure: float, targets: int, quorum: int) -> float:
    """P(fewer than ``quorum`` of ``targets`` independent probes succeed)."""
    if not 0 <= probe_failure <= 1:
        raise DecisionConfigError("probe_failure", probe_failure, "must be in [0, 1]")
    check_count("targets", targets)
    check_count("quorum", quorum)
    if quorum > targets:
        raise DecisionConfigError("quorum", quorum, f"must not exceed targets ({targets})")
    q = 1.0 - probe_failure
    return sum(math.comb(targets, k) * q**k * probe_failure ** (targets - k) for k in range(quorum))


def false_down_rate_per_hour(
    round_failure: float, down_after_rounds: int, round_interval_s: float
) -> float:
    """Expected runs of ≥ N consecutive failed rounds per hour (each is a false 'down')."""
    check_count("down_after_rounds", down_after_rounds)
    check_positive("round_interval_s", round_interval_s)
    rounds_per_hour = 3600.0 / round_interval_s
    return rounds_per_hour * (1.0 - round_failure) * round_failure**down_after_rounds


def false_down_rate_for(config: MonitorConfig, packet_loss: float) -> float:
    """``false_down_rate_per_hour`` for a config and an independent per-packet loss."""
    p = exchange_failure_probability(packet_loss, config.attempts)
    r = round_failure_probability(p, config.targets, config.quorum)
    return false_down_rate_per_hour(r, config.down_after_rounds, config.round_interval_s)
