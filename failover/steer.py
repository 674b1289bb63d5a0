"""Payments steered around a brownout: when to move the gateway's traffic to LTE (pure).

A brownout is wired up but bad: 40-70 % of packets lost, or slow. The
failover detector (``failover.decision``) rides it out by design -- it is tuned not to
cry wolf below the loss it promises to survive -- so the whole shop stays on wired and
an online payment, a few TCP and TLS round trips, runs into retransmission timeouts and
stands in. Steering moves *only* the payment gateway's traffic (``failover.steering``:
a policy rule to the LTE table for the gateway's addresses) while the rest of the shop
stays on wired, and brings it back with hysteresis.

What is measured. Each wired probe round reports, for its probes that are a fresh
exchange each round (TCP connect, DNS query, ICMP echo: a kept HTTP(S) connection rides
out loss by TCP resends), how many round trips their attempts made and how many of them
went unanswered (``failover.steering.loss_evidence``, ``failover.probes.retry``), and
the median latency of the probes that answered. The *loss* of a span of rounds is lost /
exchanged round trips, its *latency* the median of the rounds' medians.

Why round trips and not probes. A probe retries (3 or 4 attempts), so its failures
are far below the packet loss: at ``e`` loss of an exchange it fails with
``e^attempts``. At 60 % exchange loss (37 % each way) a sequential-detector probe (4
attempts) still succeeds 87 % of the time. The steer once judged those 13 % against a
10 % threshold, every 5 s window of ~50 probes held bad for 5 s: the windows dipped
under the threshold often enough that the drill's brownout steered after 7-24 s (its
limit is 15 s), and a fifth of simulated onsets took longer than 15 s. The attempts see
the loss itself: 60 % of them are lost, ~220 round trips in 10 s, and that is what a
payment's 3-4 round trips meet. A late answer is not a lost one: attempts are 0.1 s
apart, so on a slow line the first attempt still answers first (latency has its own
threshold, below).

Hysteresis, and why it does not flap:

* *steer* when the rounds of the last ``window_s + steer_after_s`` (5 + 5 s), taken
  together, are bad -- round-trip loss ≥ ``steer_loss`` (50 %) or latency ≥
  ``steer_latency_ms`` (450 ms) -- wired carries the traffic, LTE is healthy (``up``:
  not degraded, not awaiting a verdict), and the last steer is at least
  ``steer_min_interval_s`` (300 s) ago: at most one steer per 5 minutes, whatever the
  line does (but for *resume*, below). One span judged as a whole, not every window of
  it in turn: a line near the threshold then crosses it on the evidence of 10 s of
  rounds, instead of flickering in and out of 5 s windows and restarting a hold.
* *unsteer* when the last ``window_s`` is good -- loss < ``unsteer_loss`` (10 %) and
  latency < ``unsteer_latency_ms`` (300 ms) -- continuously for ``unsteer_after_s``
  (30 s); at once when LTE stops being usable or wired stops carrying the traffic (a
  failover moved everything anyway).
* *resume* after such a failover: the payments never came back to wired, so the failback
  to a wired line that is still bad is not a new steer for the interval to hold back.
  While failed over the rounds keep being judged (the wired probes go on); at the
  failback, if the span is bad, the gateway is steered again at once, whatever
  ``steer_min_interval_s`` says. A good window meanwhile ends it (the brownout is
  over). Measured: the rounds detector at 60 % exchange loss failed over after 4
  minutes of steering and back 6 s later; with the interval in the way the payments
  then spent the brownout's last 50 s on wired, 55 of them failed (bench_failover,
  BENCHMARKS.md).

Where the thresholds sit. 50 % of round trips (30 % each way) steers; the failover
detector's design loss, 20 % each way (36 % of round trips: the drill's loss phase),
does not: there the detector shows it rides loss out, and a payment's round trips mostly
get through on the first or second try. Over 10 s of 2 fresh probes per 0.2 s round
(the drill's TCP and ICMP targets; ~180-220 round trips) the span's loss has a standard
deviation of ~3.5 points, so 36 % and 60 % lie 4 deviations either side of 50 %.
Measured with this policy in virtual time (benchmarks/bench_steer_onsets.py, on the line
model of tests/failover/test_steer.py; 1,000 onsets a case, two seeds):

* 60 % from a clean line: steered after 7.0 s median, 8.6-8.8 s p95, 10.4-13.6 s at
  most; after 15 s at 36 % (the drill's order): 5.0 s median, 10.4-13.8 s at most, and
  1 of the 2,000 steered during those 15 s (the drill's loss phase: about one drill in a
  thousand steers early);
* constant loss, steers an hour with the interval set to 0: 0 at 0-36 % (4 h each,
  twice), 5-6 at 40 %, 83-85 at 45 % (the interval holds those to one per 5 minutes).

Between the thresholds nothing changes. Under constant 60 % loss the window's loss
stays near 60 %: the 10 % exit is out of reach, steered stays steered. A healthy line
loses well under 1 % of its round trips.

Latency. A probe answered after its deadline is a failed probe, so the latency the
window sees is always below the wired deadline: 0.6 s with the sequential detector
(the default), 1 s with the rounds detector. Hence the two bands:

* latency from ``steer_latency_ms`` up to the deadline: probes answer, slowly; the
  detector stays quiet (nothing fails), the span's median latency steers. 450 ms because
  a payment is 3-4 round trips (TCP, TLS, the request): 1.35-1.8 s at 450 ms, inside the
  2 s the payments' p95 is held to; at 600 ms it would be 1.8-2.4 s. The threshold must
  stay below the deadline or this path can never fire (600 ms, the old default, never
  could with the sequential detector's 0.6 s: the config loader refuses it now).
* latency past the deadline (seconds of it: ``lab.latency``'s +2 s in
  bench_failover's brownout): every probe fails, to the detector it is a blackhole and
  wired goes down in its detection time (1.2-1.4 s sequential, 2.5-3 s rounds), before
  ``steer_after_s``. The whole shop fails over, not only the payments, and that is
  right: at 2 s a round trip a payment (3 s deadline) cannot complete on wired, and
  nothing interactive in the shop works either. Steering then stays out of it (wired
  does not carry the traffic); wired comes back only after ``stable_s`` of answered
  rounds, which a line still 2 s slow never gives, so there is one failover and no
  flapping; once healed, failback, and steering judges wired afresh.

Time is injected (``monotonic=``); nothing here does I/O.
"""

from __future__ import annotations

import statistics
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

from failover.config import check_count, check_fraction, check_non_negative, check_positive
from failover.errors import DecisionConfigError
from failover.link import Monotonic

__all__ = ["SteerChange", "SteerConfig", "SteerPolicy"]


@dataclass(frozen=True, slots=True)
class SteerConfig:
    """The steering policy's thresholds (module docs); seconds unless named otherwise."""

    steer_loss: float = 0.50
    steer_latency_ms: float = 450.0
    unsteer_loss: float = 0.10
    unsteer_latency_ms: float = 300.0
    steer_after_s: float = 5.0
    unsteer_after_s: float = 30.0
    steer_min_interval_s: float = 300.0
    window_s: float = 5.0
    min_probes: int = 6  # a window judges nothing with fewer round trips

    def __post_init__(self) -> None:
        for name in ("steer_loss", "unsteer_loss"):
            check_fraction(name, getattr(self, name))
        for name in ("steer_latency_ms", "unsteer_latency_ms", "window_s"):
            check_positive(name, getattr(self, name))
        for name in ("steer_after_s", "unsteer_after_s", "steer_min_interval_s"):
            check_non_negative(name, getattr(self, name))
        if self.unsteer_loss > self.steer_loss:
            raise DecisionConfigError("unsteer_loss", self.unsteer_loss,
                                      f"must not exceed steer_loss ({self.steer_loss})")
        if self.unsteer_latency_ms > self.steer_latency_ms:
            raise DecisionConfigError(
                "unsteer_latency_ms", self.unsteer_latency_ms,
                f"must not exceed steer_latency_ms ({self.steer_latency_ms})")
        check_count("min_probes", self.min_probes)


@dataclass(frozen=True, slots=True)
class SteerChange:
    """The gateway's traffic moves to LTE (``steered``) or back to wired."""

    steered: bool
    reason: str
    at: float


@dataclass(frozen=True, slots=True)
class _Round:
    at: float
    failed: int
    attempted: int
    latency_ms: float | None


class SteerPolicy:
    """Whether the gateway's traffic goes by LTE; fed wired rounds (module docs)."""

    def __init__(self, config: SteerConfig | None = None,
                 monotonic: Monotonic = time.monotonic) -> None:
        self.config = config if config is not None else SteerConfig()
        self._monotonic = monotonic
        self._rounds: deque[_Round] = deque()  # the hold's span (``hold_s``)
        self._first_round: float | None = None
        self.steered = False
        self.since: float | None = None  # of the current steered/unsteered state
        self.reason = "not steered"
        self.steers = 0
        self._last_steer: float | None = None
        self._good_since: float | None = None
        self._resume = False  # steered when a failover took everything (module docs)

    @property
    def hold_s(self) -> float:
        """The span a steer judges: ``window_s + steer_after_s`` (module docs)."""
        return self.config.window_s + self.config.steer_after_s

    def quality(self, span_s: float | None = None) -> tuple[float | None, float | None]:
        """(loss, latency ms) of the rounds of the last ``span_s`` (default ``window_s``);
        loss None while they hold too few round trips."""
        now = self._monotonic()
        span = self.config.window_s if span_s is None else span_s
        rounds = [r for r in self._rounds if r.at > now - span]
        attempted = sum(r.attempted for r in rounds)
        failed = sum(r.failed for r in rounds)
        latencies = [r.latency_ms for r in rounds if r.latency_ms is not None]
        loss = failed / attempted if attempted >= self.config.min_probes else None
        return loss, (statistics.median(latencies) if latencies else None)

    def add_round(self, failed: int, attempted: int, latency_ms: float | None) -> None:
        """One completed wired round: ``failed`` of ``attempted`` round trips lost
        (`failover.steering.loss_evidence`), the median latency of its answers."""
        now = self._monotonic()
        if self._first_round is None:
            self._first_round = now
        self._rounds.append(_Round(now, failed, attempted, latency_ms))
        while self._rounds and self._rounds[0].at <= now - self.hold_s:  # ⊇ window_s
            self._rounds.popleft()

    def evaluate(self, *, lte_healthy: bool, wired_active: bool) -> SteerChange | None:
        """Decide on the window and the links now (after every round and link change)."""
        now = self._monotonic()
        if self.steered:
            return self._while_steered(now, lte_healthy, wired_active)
        return self._while_unsteered(now, lte_healthy, wired_active)

    def describe(self, now: float | None = None) -> dict[str, Any]:
        now = self._monotonic() if now is None else now
        loss, latency = self.quality()
        return {"steered": self.steered, "reason": self.reason, "steers": self.steers,
                "since_s": None if self.since is None else round(now - self.since, 3),
                "loss": None if loss is None else round(loss, 4),
                "median_latency_ms": latency}

    # -- internals

    def _bad(self, now: float) -> str | None:
        """What is wrong with the hold's span, once the rounds cover it."""
        cfg = self.config
        if self._first_round is None or now - self._first_round < self.hold_s - 1e-9:
            return None
        loss, latency = self.quality(self.hold_s)
        problems = []
        if loss is not None and loss >= cfg.steer_loss:
            problems.append(f"wired round-trip loss {loss:.0%}")
        if latency is not None and latency >= cfg.steer_latency_ms:
            problems.append(f"wired latency {latency:.0f}ms")
        return ", ".join(problems) or None

    def _good(self) -> bool:
        cfg = self.config
        loss, latency = self.quality()
        return (loss is not None and loss < cfg.unsteer_loss
                and (latency is None or latency < cfg.unsteer_latency_ms))

    def _while_unsteered(self, now: float, lte_healthy: bool,
                         wired_active: bool) -> SteerChange | None:
        if self._resume and self._good():
            self._resume = False  # the brownout ended while failed over
        bad = self._bad(now) if wired_active or self._resume else None
        if bad is None or not lte_healthy or not wired_active:
            return None
        cfg = self.config
        if not self._resume and self._last_steer is not None \
                and now - self._last_steer < cfg.steer_min_interval_s:
            return None
        self._last_steer = now
        self.steers += 1
        again = " (again, after the failback)" if self._resume else ""
        return self._set(True, f"brownout: {bad} over {self.hold_s:.1f}s{again}", now)

    def _while_steered(self, now: float, lte_healthy: bool,
                       wired_active: bool) -> SteerChange | None:
        if not lte_healthy:
            return self._set(False, "LTE is not usable", now)
        if not wired_active:
            change = self._set(False, "wired no longer carries the traffic", now)
            self._resume = True
            return change
        if not self._good():
            self._good_since = None
            return None
        if self._good_since is None:
            self._good_since = now
        held = now - self._good_since
        if held < self.config.unsteer_after_s:
            return None
        loss, latency = self.quality()
        shown = "" if latency is None else f", latency {latency:.0f}ms"
        return self._set(False, f"wired recovered: round-trip loss {loss or 0.0:.0%}{shown} "
                                f"for {held:.1f}s", now)

    def _set(self, steered: bool, reason: str, now: float) -> SteerChange:
        self.steered = steered
        self.since = now
        self.reason = reason
        self._good_since = None
        self._resume = False
        return SteerChange(steered, reason, now)
