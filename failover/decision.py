"""Pure failover decisions: each uplink's link state from its probe rounds.

Nothing here does I/O or touches asyncio. Time comes from an injected ``monotonic``
callable (``time.monotonic`` by default), so tests drive hours of rounds instantly.

Model and defaults
------------------
A runner starts a probe *round* on each watched uplink every
``round_interval_s`` (0.5 s), **without waiting for the previous round**: each
round has its own deadline ``probe_timeout_s`` (1.0 s), so up to two rounds are
in flight and a verdict arrives every 0.5 s even on a dead line. A round is 3
targets; it is ok when ``quorum`` (2) of them answer. Each single-exchange probe
retransmits (DNS, ICMP) or hedges a new connection (TCP, HTTP) after 0.3 s, up
to 3 attempts within its deadline (see ``failover.probes``).

``LinkMonitor`` turns rounds and carrier events into ``up | degraded | down``:

* carrier lost → ``down`` at once;
* ``down_after_rounds`` (4) consecutive failed rounds → ``down``;
* ``degraded`` while up when, over the last ``quality_rounds`` (20, i.e. 10 s)
  rounds, any round failed, or probe loss ≥ ``degraded_loss`` (10 %), or the
  median latency ≥ ``degraded_latency_ms`` (300 ms);
* back ``up`` from ``down`` only after ``stable_s`` (30 s) of uninterrupted good
  rounds with carrier (any failed round or carrier loss restarts the window);
  a link that has never failed (boot) comes up after ``startup_rounds`` (2).

Where the rest is: the down tests with the arithmetic that argues for them, in
``failover.rounds`` (consecutive failed rounds: ``MonitorConfig``'s own preset and LTE's
test; detection time and false alarms at 20 % loss) and ``failover.sequential`` (a CUSUM
on failed probes, the wired line's default ``probes.detector``: faster, with Lorden's
bound and the bursty-loss figures); the uplink choice in
``failover.selector``; the LTE standby pacing in ``failover.budget``; the shared
vocabulary (``LinkState``, ``LinkStatus``, ``Uplink``, ``Transition``) in
``failover.link`` and the parameters in ``failover.config``. Here: ``LinkMonitor``,
and the bounds and simulations the arithmetic is checked with
(``detection_time_bounds_s``, ``simulate_false_downs``, ``simulate_burst_downs``).
"""

from __future__ import annotations

import math
import random
import statistics
import time
from collections import deque

from failover.config import MonitorConfig, exchange_failure_probability
from failover.errors import DecisionConfigError
from failover.link import LinkChange, LinkState, LinkStatus, Monotonic, RoundOutcome
from failover.rounds import RoundsTest
from failover.sequential import SEQUENTIAL_RETRY_AFTER_S, SequentialTest

__all__ = [
    "DownTest",
    "LinkMonitor",
    "detection_time_bounds_s",
    "make_detector",
    "rounds_to_detect",
    "simulate_burst_downs",
    "simulate_false_downs",
]


DownTest = RoundsTest | SequentialTest


def make_detector(config: MonitorConfig) -> DownTest:
    """The down test ``config.detector`` names."""
    return SequentialTest(config) if config.detector == "sequential" else RoundsTest(config)


# --------------------------------------------------------------------------- link monitor


class LinkMonitor:
    """One uplink's state from round outcomes and carrier events (pure, time injected)."""

    def __init__(
        self, config: MonitorConfig | None = None, monotonic: Monotonic = time.monotonic
    ) -> None:
        self.config = config if config is not None else MonitorConfig()
        self._monotonic = monotonic
        self._state = LinkState.DOWN
        self._since = monotonic()
        self._reason = "no probe results yet"
        self._carrier = True
        self._known = False
        self._failed_before = False  # a real failure happened: recovery needs stable_s
        self._consecutive_failures = 0
        self._good_since: float | None = None
        self._good_rounds = 0
        self._test = make_detector(self.config)
        self._window: deque[tuple[bool, int, int, float | None]] = deque(
            maxlen=self.config.quality_rounds
        )
        # (loss, median latency) of the window: asked for several times a round (status,
        # the selector, the LTE rate), computed once per round
        self._quality_cache: tuple[float | None, float | None] | None = None
        # the status itself: read 5-10 times a round (the engine's publish and decisions,
        # the steering, the status API) and changed only by a round or a carrier event
        # (#13's idle CPU); LinkStatus is frozen, so sharing one is safe
        self._status_cache: LinkStatus | None = None

    @property
    def state(self) -> LinkState:
        return self._state

    def status(self) -> LinkStatus:
        if self._status_cache is None:
            self._status_cache = self._new_status()
        return self._status_cache

    def _new_status(self) -> LinkStatus:
        loss, latency = self._quality()
        return LinkStatus(
            state=self._state,
            since=self._since,
            reason=self._reason,
            carrier=self._carrier,
            known=self._known,
            good_since=self._good_since,
            consecutive_failures=self._consecutive_failures,
            loss=loss,
            median_latency_ms=latency,
            suspect=self._test.suspect,
            evidence=self._test.evidence,
        )

    def carrier(self, up: bool) -> LinkChange | None:
        """A carrier event from netlink. Loss is down at once; return only re-arms."""
        self._status_cache = None
        if up:
            self._carrier = True
            return None
        self._known = True
        self._carrier = False
        self._good_since = None
        self._good_rounds = 0
        self._test.reset()
        if self._state is LinkState.DOWN:
            self._reason = "carrier lost"
            return None
        self._failed_before = True
        return self._set(LinkState.DOWN, "carrier lost")

    def observe_round(self, outcome: RoundOutcome) -> LinkChange | None:
        """Feed one completed round (in completion order)."""
        self._status_cache = None
        now = self._monotonic()
        if not self._carrier:
            return None  # stale: answers cannot have come over a link without carrier
        self._window.append(
            (outcome.ok, outcome.succeeded, outcome.attempted, outcome.median_latency_ms)
        )
        self._quality_cache = None
        cfg = self.config
        if outcome.ok:
            self._consecutive_failures = 0
            if self._good_since is None:
                self._good_since = now
            self._good_rounds += 1
        else:
            self._known = True
            self._consecutive_failures += 1
            self._good_since = None
            self._good_rounds = 0

        if self._state is not LinkState.DOWN:
            failed = outcome.attempted - outcome.succeeded
            if self._test.observe(failed, outcome.attempted, now):
                self._failed_before = True
                reason = self._test.reason()
                self._test.reset()
                return self._set(LinkState.DOWN, reason)
            return self._set(*self._quality_state())

        if self._good_since is None:
            self._reason = f"{self._consecutive_failures} consecutive failed rounds"
            return None
        if self._failed_before:
            stable = now - self._good_since
            if stable < cfg.stable_s:
                self._reason = f"recovering: good for {stable:.1f}s of {cfg.stable_s:g}s"
                return None
            state, reason = self._quality_state()
            return self._set(state, f"stable for {stable:.1f}s; {reason}")
        if self._good_rounds < cfg.startup_rounds:
            return None
        state, reason = self._quality_state()
        return self._set(state, f"{self._good_rounds} good rounds; {reason}")

    # -- internals

    def _quality(self) -> tuple[float | None, float | None]:
        if self._quality_cache is None:
            attempted = sum(a for _, _, a, _ in self._window)
            succeeded = sum(s for _, s, _, _ in self._window)
            loss = 1.0 - succeeded / attempted if attempted else None
            lat = [m for _, _, _, m in self._window if m is not None]
            self._quality_cache = loss, (statistics.median(lat) if lat else None)
        return self._quality_cache

    def _quality_state(self) -> tuple[LinkState, str]:
        cfg = self.config
        failed = sum(1 for ok, _, _, _ in self._window if not ok)
        loss, latency = self._quality()
        problems = []
        if failed:
            problems.append(f"{failed} failed of the last {len(self._window)} rounds")
        if loss is not None and loss >= cfg.degraded_loss:
            problems.append(f"probe loss {loss:.0%}")
        if latency is not None and latency >= cfg.degraded_latency_ms:
            problems.append(f"median latency {latency:.0f}ms")
        if problems:
            return LinkState.DEGRADED, ", ".join(problems)
        return LinkState.UP, "probes ok"

    def _set(self, state: LinkState, reason: str) -> LinkChange | None:
        self._reason = reason
        if state is self._state:
            return None
        change = LinkChange(self._state, state, reason, self._monotonic())
        self._known = True
        self._state = state
        self._since = change.at
        return change


# --------------------------------------------------------------------------- analysis


def rounds_to_detect(config: MonitorConfig) -> int:
    """Failed rounds (every probe failing) the down test needs for a blackhole."""
    if config.detector == "rounds":
        return config.down_after_rounds
    test = SequentialTest(config)
    evidence = math.ceil(test.threshold / test.llr(config.targets, config.targets) - 1e-9)
    guard = math.ceil(config.min_outage_s / config.round_interval_s - 1e-9) + 1
    return max(evidence, guard)


def detection_time_bounds_s(config: MonitorConfig) -> tuple[float, float]:
    """(best, worst) seconds from a blackhole to ``down`` (rounds not waiting on each other).

    The first failing round starts within one interval of the blackhole: the quiet one
    when the line was quiet (``failover.quiet``), after which the rounds run at full rate."""
    n, i, t = rounds_to_detect(config), config.round_interval_s, config.probe_timeout_s
    first = max(i, config.quiet_interval_s or i)
    return (n - 1) * i + t, (n - 1) * i + t + first


def _geometric(rng: random.Random, q: float) -> int:
    """Failures before the first success of Bernoulli(q) trials."""
    if q >= 1.0:
        return 0
    return int(math.log(1.0 - rng.random()) / math.log1p(-q))


def simulate_false_downs(
    config: MonitorConfig, packet_loss: float, hours: float, rng: random.Random
) -> int:
    """False ``down`` verdicts of ``config``'s down test in ``hours`` of independent loss.

    Virtual time, probe outcomes not sockets: a round's failed probes are drawn from
    Binomial(targets, p), p = ``exchange_failure_probability(packet_loss, attempts)``.
    Exact, and fast where it matters: rounds that cannot move a test at rest (ok
    rounds; for the CUSUM, rounds with a negative log-likelihood ratio) are fed one
    by one only while the test is away from rest, the rest of such a run is skipped
    (it leaves the test where it is). After a false ``down`` the test starts afresh.
    """
    if hours < 0:
        raise DecisionConfigError("hours", hours, "must be >= 0")
    n = config.targets
    p = exchange_failure_probability(packet_loss, config.attempts)
    probs = [math.comb(n, k) * p**k * (1.0 - p) ** (n - k) for k in range(n + 1)]
    test = make_detector(config)
    active = [k for k in range(n + 1) if test.moves(k, n)]
    quiet = [k for k in range(n + 1) if k not in active]
    q = sum(probs[k] for k in active)
    if q == 0.0:
        return 0
    active_w = [probs[k] for k in active]
    quiet_w = [probs[k] for k in quiet]
    interval = config.round_interval_s
    total = int(hours * 3600.0 / interval)
    downs = 0
    t = 0
    while t < total:
        gap = min(_geometric(rng, q), total - t)
        fed = 0
        while fed < gap and not test.at_rest:
            k = rng.choices(quiet, quiet_w)[0]
            test.observe(k, n, t * interval)
            fed += 1
            t += 1
        t += gap - fed
        if t >= total:
            break
        if test.observe(rng.choices(active, active_w)[0], n, t * interval):
            downs += 1
            test.reset()
        t += 1
    return downs


def simulate_burst_downs(
    config: MonitorConfig,
    bursts: int,
    mean_bad_s: float,
    rng: random.Random,
    *,
    bad_loss: float = 1.0,
    retry_after_s: float = SEQUENTIAL_RETRY_AFTER_S,
    rtt_s: float = 0.02,
) -> int:
    """How many of ``bursts`` Gilbert-Elliott bad periods make ``config``'s test say down.

    Packet level, virtual time: a lossless good state, then a bad period of
    exponential length (mean ``mean_bad_s``) in which each packet (request or answer)
    is lost with ``bad_loss``. Rounds start every ``round_interval_s``; each probe
    sends up to ``attempts`` requests ``retry_after_s`` apart and succeeds when an
    answer arrives (``rtt_s`` later) by its deadline. Each burst starts from a test at
    rest at a random phase of the round schedule; rounds are simulated until the
    test is back at rest after the burst.
    """
    cfg = config
    interval, deadline = cfg.round_interval_s, cfg.probe_timeout_s
    downs = 0
    for _ in range(bursts):
        test = make_detector(cfg)
        start = rng.uniform(0.0, interval) + deadline  # the first round starts at 0
        end = start + rng.expovariate(1.0 / mean_bad_s)

        def lost(at: float, start: float = start, end: float = end) -> bool:
            return start <= at < end and rng.random() < bad_loss

        r = 0
        while True:
            t0 = r * interval
            if t0 > end and test.at_rest:
                break
            failed = 0
            for _target in range(cfg.targets):
                ok = False
                for a in range(cfg.attempts):
                    sent = t0 + a * retry_after_s
                    if sent + rtt_s > t0 + deadline:
                        break
                    if not lost(sent) and not lost(sent + rtt_s):
                        ok = True
                        break
                failed += not ok
            if test.observe(failed, cfg.targets, t0 + deadline):
                downs += 1
                break
            r += 1
    return downs
