"""Sequential detector (``detector = "sequential"``, ``sequential_monitor()``).

The rounds detector (``failover.rounds``) spends most of its 2.5-3 s waiting: a
verdict needs 4 rounds *and* each round's 1 s deadline. The sequential detector asks the
same question with more evidence per second and weighs it properly:

* rounds every ``round_interval_s`` = 0.2 s (3 targets: 15 probes/s), each
  probe with 4 attempts 0.1 s apart (``SEQUENTIAL_RETRY_AFTER_S``) and a
  0.6 s deadline (the last attempt still has 0.3 s for its answer; an answer
  to an earlier attempt counts too). Without loss a probe sends one attempt:
  the traffic is 15 small exchanges a second on the (unbilled) wired line, 7.5
  while the line is *quiet* (``failover.quiet``: every probe answered within
  0.1 s for 5 rounds, the test at rest): rounds then start every 0.4 s, and the
  first late or failed round brings back the 0.2 s schedule.
* a CUSUM (Page's test) on the number ``k`` of failed probes of each round.
  H0 is the worst line we promise to ride out: ``design_loss`` = 20 % loss
  each way, independent, so a probe fails with p0 = (1-0.8²)⁴ = 0.36⁴ =
  0.0168. H1 is a dead uplink: a probe fails with p1 = ``dead_probe_failure``
  (0.99, not 1: a stray answer must not wipe the evidence). Each round adds
  its log-likelihood ratio ``k·ln(p1/p0) + (n-k)·ln((1-p1)/(1-p0))``:
  k = 0: -13.76, k = 1: -5.10, k = 2: +3.56, k = 3: +12.23; the statistic is
  ``S = max(0, S + llr)``.
* down when ``S >= h`` **and** the evidence is at least ``min_outage_s``
  (0.5 s) old (between the first round that raised S from 0 and now).

False alarms (independent loss). Lorden's bound for a CUSUM on the true
likelihood ratio: the mean time to a false alarm is at least e^h rounds. So
``h = ln(rounds_per_hour / false_alarms_per_hour)`` = ln(18000 / 1e-6) =
23.61 guarantees ≤ 1e-6 false failovers per hour at 20 % loss, and at any
smaller loss (E[e^llr] ≤ 1 for every p ≤ p0: the statistic is a
supermartingale); quiet pacing runs fewer rounds an hour, never more. The
duration guard only postpones alarms, it never adds
one; under independent loss it alone makes them far rarer still, the threshold
is what holds when it is set to 0. With the guard an alarm needs evidence over
at least 4 rounds; the likeliest ways there at 20 % loss (P(k=2) = 8.3e-4,
P(k=3) = p0³ = 4.7e-6 a round) are k = 3, 3, then two rounds of k ≥ 2
(24.46 + 7.12), about 1.5e-17 a round, or 3, 3, 3 and any failed probe,
5e-18: some 1e-12 an hour counting the orderings, 1e-11 letting answered
rounds between them jump ahead (completion order, below). Without the guard, two
dead rounds in a row suffice (P(k=3)² · 18000 = 4e-7 an hour, under the bound).

The engine feeds the monitor in *completion* order: a round with a failed probe
ends at its 0.6 s deadline, after the (up to two) answered rounds started after
it, so the sequence is not quite the independent one Lorden's bound is about.
``benchmarks/bench_false_failovers.py`` drives the real ``LinkMonitor`` on a
``ManualClock`` with packet-level independent loss in that order (rounds that
cannot move a test at rest skipped exactly): **0 false failovers in 10,000
simulated hours at 20 %** (1.8e8 rounds, 11 s of CPU), 0 in 1,000 h at 10 %;
with a threshold meant for 1,000 an hour both orders give 15 an hour. At 40 %
loss each way (p = 0.168; k = 2 in 7 %, k = 3 in 0.47 % of rounds) the
order matters: 0.082 false failovers per hour in completion order (82 in
1,000 h: one every 12 hours of continuous 40 % loss), 0.038 in start order
(``decision.simulate_false_downs``, 114 in 3,000 h), where the rounds
detector makes 5 per hour (7200·(1-r)·r⁴, r = 0.170; 4.95 simulated in
completion order) and 0.035 per hour already at 30 %. Measured in the test
shop (real engine, nft ``numgen`` loss, BENCHMARKS.md): 0 false failovers in
10 minutes of 20 % loss (130 of 8,994 probes failed: p0 predicts 151) and 0
in 10 minutes of 40 % (1,516 of 9,000: 0.168 predicts 1,512).
At 40 % loss each way nearly every second exchange is lost: the line shows
``degraded`` (a brownout policy, not the failover, is the tool there). At
60 % each way (a probe fails with 0.5) no detector this fast stays quiet:
runs of 4 dead rounds are common, the sequential test says down ~650 times
an hour and the rounds test ~500 times (simulated); such a line is down.

A multi-exchange target (HTTPS: some 7 packets an attempt, so a probe fails
with 0.39 at 20 % loss, not p0) breaks the model's premise; with one such
target among three the guard still holds: 0 false failovers in 10,000
simulated hours at 20 % (the rounds detector: 0.031 an hour, 307).

The test is *suspect* (LTE is probed at full rate) at 3/4 of the threshold:
the 2nd dead round of a blackhole, 0.4 s before the verdict.

Detection. A blackhole fails every probe (k = 3: +12.23 a round), so S ≥ h
after 2 rounds; the duration guard then needs rounds completing ≥ 0.5 s
after the first failed one, i.e. the 4th failed round (completions 0.2 s
apart: 0.6 ≥ 0.5 > 0.4). The first round started after the blackhole fails
at its deadline: detection takes ``D + 3·I`` to ``D + 4·I`` = 1.2-1.4 s at the
full rate, and ``D + 3·I`` to ``D + 3·I + I_q`` = 1.2-1.6 s from a quiet line
(its first round after the blackhole starts within ``I_q`` = 0.4 s and is late
0.1 s later, so the next starts ``I`` after it; ``decision.detection_time_bounds_s``),
against 2.5-3.0 s for the rounds detector (in the test shop, LAN traffic on LTE
after 1.33 s median, 1.45 s max, n = 40, before quiet pacing; with it 1.45 s
median, 1.63 s p95, 1.66 s max; bench_failover). Two of three targets dead
(k = 2, +3.56 a round): 7 rounds, 1.8-2.0 s; one dead target (k = 1,
-5.10) never fails over and the link shows ``degraded``. Carrier loss is
still down at once.

Bursty loss (Gilbert-Elliott: a good state with little loss, a bad state
with loss b for an exponential time of mean B). A bad period fails over only
when it starves 4 consecutive rounds and the CUSUM: with b = 100 % that is a
blackout of about L = 0.95 s (4 round starts, an attempt span, the phase;
``decision.simulate_burst_downs`` at packet level, rounds in start order: 0.84 %
of bad periods of mean 0.2 s and 14.5 % of mean 0.5 s fail over, i.e. e^(-L/B)
with L ≈ 0.96 s). In completion order (the engine's; bench_false_failovers) the
answered rounds after a burst come between its failed ones and L ≈ 1.2 s: 1 of
20,000 bad periods of mean 0.1 s, 0.3 % of 0.2 s, 8.8 % of 0.5 s (the rounds
detector: 0.64 % of 0.5 s, L ≈ 2.5 s).
With B = 50 ms, P(a bad period ≥ 0.95 s) = e^-19 = 5.6e-9: one burst a
minute makes 3.4e-7 false failovers per hour; B = 100 ms: e^-9.5 = 7.5e-5,
4.5e-3 per hour (by L ≈ 1.2 s: e^-12 = 6e-6, 3.6e-4 per hour). The rounds
detector needs L ≈ 2.3-2.5 s. The guard ``min_outage_s`` is the knob: a total
blackout shorter than about ``min_outage_s + 0.45 s`` never fails over, each
0.2 s more of it costs 0.2 s of detection. A blackout of a second is also what
a payment in flight feels; moving to LTE then is not a false alarm for a shop.

This is the wired line's default (``probes.detector``): it meets the issue's
targets (blackhole → LAN on LTE ≤ 1.6 s median, ≤ 2.0 s p95, n = 40; the
false-failover rates above; the idle daemon under 1 % of a core with the
default targets thanks to quiet pacing, 0.79-0.87 %; BENCHMARKS.md). ``"rounds"`` stays selectable.
"""

from __future__ import annotations

import math

from failover.config import MonitorConfig, exchange_failure_probability

__all__ = ["SEQUENTIAL_RETRY_AFTER_S", "SequentialTest", "sequential_monitor"]

SEQUENTIAL_RETRY_AFTER_S = 0.1  # the probes' retry/hedge interval for the sequential preset


def sequential_monitor(**overrides: object) -> MonitorConfig:
    """The sequential detector's preset (module docs): 0.2 s rounds (0.4 s while quiet,
    ``failover.quiet``), 0.6 s deadline, 4 attempts (probes retry after
    ``SEQUENTIAL_RETRY_AFTER_S``), a 10 s quality window."""
    fields: dict[str, object] = {
        "round_interval_s": 0.2, "probe_timeout_s": 0.6, "attempts": 4,
        "quality_rounds": 50, "detector": "sequential",
        "quiet_interval_s": 0.4, "quiet_late_s": SEQUENTIAL_RETRY_AFTER_S}
    fields.update(overrides)
    return MonitorConfig(**fields)  # type: ignore[arg-type]


class SequentialTest:
    """CUSUM on failed probes per round, with a minimum outage duration (module docs)."""

    def __init__(self, config: MonitorConfig) -> None:
        self.config = config
        self.p0 = exchange_failure_probability(config.design_loss, config.attempts)
        p1 = config.dead_probe_failure
        self.llr_failed = math.log(p1 / self.p0)
        self.llr_answered = math.log((1.0 - p1) / (1.0 - self.p0))
        rounds_per_hour = 3600.0 / config.round_interval_s
        self.threshold = math.log(rounds_per_hour / config.false_alarms_per_hour)
        self.statistic = 0.0
        self.started: float | None = None  # when the statistic last left 0

    @property
    def at_rest(self) -> bool:
        return self.statistic == 0.0

    @property
    def evidence(self) -> float:
        return self.statistic

    @property
    def suspect(self) -> bool:
        # 3/4 of the evidence: the 2nd dead round of a blackhole (0.4 s before down),
        # not a single bad round (LTE would be woken ~85 times an hour at 40 % loss)
        return self.statistic >= 0.75 * self.threshold

    def llr(self, failed: int, attempted: int) -> float:
        """Log-likelihood ratio (dead uplink vs design loss) of a round."""
        return failed * self.llr_failed + (attempted - failed) * self.llr_answered

    def moves(self, failed: int, attempted: int) -> bool:
        return self.llr(failed, attempted) > 0

    def observe(self, failed: int, attempted: int, now: float) -> bool:
        previous = self.statistic
        self.statistic = max(0.0, previous + self.llr(failed, attempted))
        if self.statistic == 0.0:
            self.started = None
        elif previous == 0.0 or self.started is None:
            self.started = now
        return (self.statistic >= self.threshold and self.started is not None
                and now - self.started >= self.config.min_outage_s)

    def reason(self) -> str:
        return (f"sequential test: evidence {self.statistic:.1f} >= {self.threshold:.1f} "
                f"over {self.config.min_outage_s:g}s or more")

    def reset(self) -> None:
        self.statistic = 0.0
        self.started = None
