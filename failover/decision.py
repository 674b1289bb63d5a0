"""Pure failover decisions: per-uplink link state, uplink selection, LTE standby budget.

Nothing here does I/O or touches asyncio. Time comes from an injectable clock
(``time.monotonic`` by default), so tests drive hours of rounds instantly.

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

Time to detect a blackhole (link up, nothing passes): the first round started
after the blackhole fails at its deadline, and the 4th at
``(N-1)*I + T`` after it started, so detection takes between
``(N-1)*I + T = 2.5 s`` (blackhole just before a round starts) and
``N*I + T = 3.0 s`` (just after), see ``detection_time_bounds_s``.

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
the single-exchange figure; with one HTTPS target among three the bound holds
as long as the two others are single-exchange probes.

Sequential detector (``detector = "sequential"``, ``sequential_monitor()``)
--------------------------------------------------------------------------
The rounds detector above spends most of its 2.5-3 s waiting: a verdict needs
4 rounds *and* each round's 1 s deadline. The sequential detector asks the
same question with more evidence per second and weighs it properly:

* rounds every ``round_interval_s`` = 0.2 s (3 targets: 15 probes/s), each
  probe with 4 attempts 0.1 s apart (``SEQUENTIAL_RETRY_AFTER_S``) and a
  0.6 s deadline (the last attempt still has 0.3 s for its answer; an answer
  to an earlier attempt counts too). Without loss a probe sends one attempt:
  the traffic is 15 small exchanges a second on the (unbilled) wired line.
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
supermartingale). The duration guard only postpones alarms, it never adds
one; under independent loss it alone makes them far rarer still (4 rounds
of evidence in a row), the threshold is what holds when it is set to 0.
Simulated (``simulate_false_downs``, exact: rounds that cannot move a
statistic at rest are skipped, every other round is drawn from the binomial):
0 in 10,000 hours at 20 % (the test), 0 in 3,000 hours at 30 %, and at 40 %
loss each way (p = 0.168; k = 2 in 7 %, k = 3 in 0.47 % of rounds) 0.038
false failovers per hour (114 in 3,000 h: one a day of continuous 40 % loss),
where the rounds detector makes 5 per hour (7200·(1-r)·r⁴, r = 0.170;
simulated 5.0) and 0.035 per hour already at 30 %.
At 40 % loss each way nearly every second exchange is lost: the line shows
``degraded`` (a brownout policy, not the failover, is the tool there). At
60 % each way (a probe fails with 0.5) no detector this fast stays quiet:
runs of 4 dead rounds are common, the sequential test says down ~650 times
an hour and the rounds test ~500 times (simulated); such a line is down.

The test is *suspect* (LTE is probed at full rate) at 3/4 of the threshold:
the 2nd dead round of a blackhole, 0.4 s before the verdict.

Detection. A blackhole fails every probe (k = 3: +12.23 a round), so S ≥ h
after 2 rounds; the duration guard then needs rounds completing ≥ 0.5 s
after the first failed one, i.e. the 4th failed round (completions 0.2 s
apart: 0.6 ≥ 0.5 > 0.4). The first round started after the blackhole fails
at its deadline: detection takes ``D + 3·I`` to ``D + 4·I`` = 1.2-1.4 s
(``detection_time_bounds_s``), against 2.5-3.0 s (in the test shop, LAN
traffic on LTE after 1.33 s median, 1.45 s max, n = 40; bench_failover). Two of three targets dead
(k = 2, +3.56 a round): 7 rounds, 1.8-2.0 s; one dead target (k = 1,
-5.10) never fails over and the link shows ``degraded``. Carrier loss is
still down at once.

Bursty loss (Gilbert-Elliott: a good state with little loss, a bad state
with loss b for an exponential time of mean B). A bad period fails over only
when it starves 4 consecutive rounds and the CUSUM: with b = 100 % that is a
blackout of about L = 0.95 s (4 round starts, an attempt span, the phase;
``simulate_burst_downs`` at packet level: 0.84 % of bad periods of mean
0.2 s and 14.5 % of mean 0.5 s fail over, i.e. e^(-L/B) with L ≈ 0.96 s).
With B = 50 ms, P(a bad period ≥ 0.95 s) = e^-19 = 5.6e-9: one burst a
minute makes 3.4e-7 false failovers per hour; B = 100 ms: e^-9.5 = 7.5e-5,
4.5e-3 per hour. The rounds detector needs L ≈ 2.3 s (1.0 % of bad
periods of mean 0.5 s). The guard ``min_outage_s`` is the knob: a total blackout
shorter than about ``min_outage_s + 0.45 s`` never fails over, each 0.2 s
more of it costs 0.2 s of detection. A blackout of a second is also what a
payment in flight feels; moving to LTE then is not a false alarm for a shop.

``UplinkSelector`` picks ``wired | lte | none``: wired whenever usable
(up or degraded); LTE when wired is down and LTE is usable; none when neither
is (offline mode). Failback to wired needs wired good for ``failback_stable_s``
(30 s) — unless LTE itself is down, when any usable wired beats being offline.
Switches are decisions only; route control applies them make-before-break.
"""

from __future__ import annotations

import math
import random
import statistics
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Literal, Protocol

from failover.errors import DecisionConfigError

__all__ = [
    "DETECTORS",
    "SECONDS_PER_MONTH",
    "SEQUENTIAL_RETRY_AFTER_S",
    "Clock",
    "Detector",
    "DownTest",
    "LinkChange",
    "LinkMonitor",
    "LinkState",
    "LinkStatus",
    "MonitorConfig",
    "RoundOutcome",
    "RoundSample",
    "RoundsTest",
    "SelectorConfig",
    "SequentialTest",
    "Transition",
    "TransitionKind",
    "Uplink",
    "UplinkSelector",
    "adaptive_standby_interval_s",
    "detection_time_bounds_s",
    "exchange_failure_probability",
    "false_down_rate_for",
    "false_down_rate_per_hour",
    "make_detector",
    "monthly_probe_bytes",
    "round_failure_probability",
    "rounds_to_detect",
    "sequential_monitor",
    "simulate_burst_downs",
    "simulate_false_downs",
    "standby_probe_interval_s",
]

Clock = Callable[[], float]
Detector = Literal["rounds", "sequential"]
DETECTORS: tuple[Detector, ...] = ("rounds", "sequential")
SEQUENTIAL_RETRY_AFTER_S = 0.1  # the probes' retry/hedge interval for the sequential preset


class LinkState(StrEnum):
    UP = "up"
    DEGRADED = "degraded"
    DOWN = "down"


class Uplink(StrEnum):
    WIRED = "wired"
    LTE = "lte"
    NONE = "none"


class TransitionKind(StrEnum):
    FAILOVER = "failover"  # wired -> lte
    FAILBACK = "failback"  # lte -> wired
    OFFLINE_MODE = "offline_mode"  # wired|lte -> none
    RECOVERED = "recovered"  # none -> wired|lte


class RoundOutcome(Protocol):
    """What the monitor needs from a probe round (``probes.RoundResult`` fits)."""

    @property
    def ok(self) -> bool: ...
    @property
    def succeeded(self) -> int: ...
    @property
    def attempted(self) -> int: ...
    @property
    def median_latency_ms(self) -> float | None: ...


@dataclass(frozen=True, slots=True)
class RoundSample:
    """A plain round outcome, for simulations and tests."""

    succeeded: int
    attempted: int
    quorum: int
    median_latency_ms: float | None = None

    @property
    def ok(self) -> bool:
        return self.succeeded >= self.quorum


# --------------------------------------------------------------------------- configuration


def _positive(name: str, value: float) -> None:
    if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
        raise DecisionConfigError(name, value, "must be a positive number")


def _count(name: str, value: int, minimum: int = 1) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise DecisionConfigError(name, value, f"must be an integer >= {minimum}")


@dataclass(frozen=True, slots=True)
class MonitorConfig:
    """Per-uplink monitoring parameters (defaults are for the wired line)."""

    round_interval_s: float = 0.5
    probe_timeout_s: float = 1.0
    targets: int = 3
    quorum: int = 2
    attempts: int = 3
    down_after_rounds: int = 4
    stable_s: float = 30.0
    startup_rounds: int = 2
    quality_rounds: int = 20
    degraded_loss: float = 0.10
    degraded_latency_ms: float = 300.0
    # which test declares the link down (module docs): "rounds" counts consecutive
    # failed rounds; "sequential" is a CUSUM on failed probes with the fields below
    detector: Detector = "rounds"
    design_loss: float = 0.20  # H0: independent loss each way the link must ride out
    dead_probe_failure: float = 0.99  # H1: P(a probe fails) on a dead uplink
    false_alarms_per_hour: float = 1e-6  # at design_loss: sets the threshold
    min_outage_s: float = 0.5  # the evidence must be this old (burst tolerance)

    def __post_init__(self) -> None:
        _positive("round_interval_s", self.round_interval_s)
        _positive("probe_timeout_s", self.probe_timeout_s)
        _count("targets", self.targets)
        _count("quorum", self.quorum)
        if self.quorum > self.targets:
            raise DecisionConfigError(
                "quorum", self.quorum, f"must not exceed targets ({self.targets})"
            )
        _count("attempts", self.attempts)
        _count("down_after_rounds", self.down_after_rounds)
        if not (isinstance(self.stable_s, int | float) and self.stable_s >= 0):
            raise DecisionConfigError("stable_s", self.stable_s, "must be >= 0")
        _count("startup_rounds", self.startup_rounds)
        _count("quality_rounds", self.quality_rounds)
        if not 0 < self.degraded_loss <= 1:
            raise DecisionConfigError("degraded_loss", self.degraded_loss, "must be in (0, 1]")
        _positive("degraded_latency_ms", self.degraded_latency_ms)
        if self.detector not in DETECTORS:
            raise DecisionConfigError("detector", self.detector, f"must be one of {DETECTORS}")
        if not 0 < self.design_loss < 1:
            raise DecisionConfigError("design_loss", self.design_loss, "must be in (0, 1)")
        p0 = exchange_failure_probability(self.design_loss, self.attempts)
        if not p0 < self.dead_probe_failure < 1:
            raise DecisionConfigError(
                "dead_probe_failure", self.dead_probe_failure,
                f"must be in ({p0:.4g}, 1): above the probe failure at design_loss")
        _positive("false_alarms_per_hour", self.false_alarms_per_hour)
        if not (isinstance(self.min_outage_s, int | float) and 0 <= self.min_outage_s < 60):
            raise DecisionConfigError("min_outage_s", self.min_outage_s, "must be in [0, 60)")


def sequential_monitor(**overrides: object) -> MonitorConfig:
    """The sequential detector's preset (module docs): 0.2 s rounds, 0.6 s deadline,
    4 attempts (probes retry after ``SEQUENTIAL_RETRY_AFTER_S``), a 10 s quality window."""
    fields: dict[str, object] = {
        "round_interval_s": 0.2, "probe_timeout_s": 0.6, "attempts": 4,
        "quality_rounds": 50, "detector": "sequential"}
    fields.update(overrides)
    return MonitorConfig(**fields)  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class SelectorConfig:
    failback_stable_s: float = 30.0
    startup_grace_s: float = 5.0  # at boot, wait this long for a wired verdict before LTE

    def __post_init__(self) -> None:
        for name in ("failback_stable_s", "startup_grace_s"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value >= 0):
                raise DecisionConfigError(name, value, "must be a number >= 0")


# --------------------------------------------------------------------------- down tests


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


DownTest = RoundsTest | SequentialTest


def make_detector(config: MonitorConfig) -> DownTest:
    """The down test ``config.detector`` names."""
    return SequentialTest(config) if config.detector == "sequential" else RoundsTest(config)


# --------------------------------------------------------------------------- link monitor


@dataclass(frozen=True, slots=True)
class LinkStatus:
    """A snapshot of one uplink's monitor, the selector's input."""

    state: LinkState
    since: float
    reason: str
    carrier: bool
    known: bool  # a verdict was reached: it has been up, or failed a round, or lost carrier
    good_since: float | None  # start of the current run of good rounds with carrier
    consecutive_failures: int
    loss: float | None  # probe loss over the quality window
    median_latency_ms: float | None
    suspect: bool = False  # the down test is half way: probe the standby at full rate
    evidence: float = 0.0  # the down test's statistic (failed rounds, or the CUSUM)

    @property
    def usable(self) -> bool:
        return self.state is not LinkState.DOWN

    def stable_for(self, now: float) -> float:
        return 0.0 if self.good_since is None else max(0.0, now - self.good_since)


@dataclass(frozen=True, slots=True)
class LinkChange:
    old: LinkState
    new: LinkState
    reason: str
    at: float


class LinkMonitor:
    """One uplink's state from round outcomes and carrier events (pure, clock injected)."""

    def __init__(self, config: MonitorConfig | None = None, clock: Clock = time.monotonic) -> None:
        self.config = config if config is not None else MonitorConfig()
        self._clock = clock
        self._state = LinkState.DOWN
        self._since = clock()
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

    @property
    def state(self) -> LinkState:
        return self._state

    def status(self) -> LinkStatus:
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
        now = self._clock()
        if not self._carrier:
            return None  # stale: answers cannot have come over a link without carrier
        self._window.append(
            (outcome.ok, outcome.succeeded, outcome.attempted, outcome.median_latency_ms)
        )
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
        attempted = sum(a for _, _, a, _ in self._window)
        succeeded = sum(s for _, s, _, _ in self._window)
        loss = 1.0 - succeeded / attempted if attempted else None
        lat = [m for _, _, _, m in self._window if m is not None]
        return loss, (statistics.median(lat) if lat else None)

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
        change = LinkChange(self._state, state, reason, self._clock())
        self._known = True
        self._state = state
        self._since = change.at
        return change


# --------------------------------------------------------------------------- uplink selector


@dataclass(frozen=True, slots=True)
class Transition:
    """A decision to switch the active uplink; route control applies it make-before-break."""

    kind: TransitionKind
    from_uplink: Uplink
    to_uplink: Uplink
    reason: str
    at: float


class UplinkSelector:
    """Chooses the active uplink among wired, lte and none (pure, clock injected)."""

    def __init__(self, config: SelectorConfig | None = None, clock: Clock = time.monotonic) -> None:
        self.config = config if config is not None else SelectorConfig()
        self._clock = clock
        self._started = clock()
        self._active = Uplink.NONE
        self._since = self._started
        self.history: list[Transition] = []

    @property
    def active(self) -> Uplink:
        return self._active

    @property
    def since(self) -> float:
        return self._since

    def lte_role(self, lte: LinkStatus) -> str:
        """The LTE state for the status JSON: ``standby`` when healthy and not carrying."""
        if self._active is not Uplink.LTE and lte.usable:
            return "standby"
        return lte.state.value

    def update(self, wired: LinkStatus, lte: LinkStatus) -> Transition | None:
        now = self._clock()
        active = self._active
        if active is Uplink.WIRED:
            if wired.usable:
                return None
            if lte.usable:
                return self._switch(
                    TransitionKind.FAILOVER, Uplink.LTE, f"wired down: {wired.reason}"
                )
            return self._switch(
                TransitionKind.OFFLINE_MODE,
                Uplink.NONE,
                f"wired down: {wired.reason}; lte down: {lte.reason}",
            )
        if active is Uplink.LTE:
            if not lte.usable:
                if wired.usable:
                    return self._switch(
                        TransitionKind.FAILBACK, Uplink.WIRED, f"lte down: {lte.reason}; wired up"
                    )
                return self._switch(
                    TransitionKind.OFFLINE_MODE,
                    Uplink.NONE,
                    f"lte down: {lte.reason}; wired down: {wired.reason}",
                )
            stable = wired.stable_for(now)
            if wired.usable and stable >= self.config.failback_stable_s:
                return self._switch(
                    TransitionKind.FAILBACK, Uplink.WIRED, f"wired stable for {stable:.1f}s"
                )
            return None
        # offline (or booting)
        if wired.usable:
            return self._switch(TransitionKind.RECOVERED, Uplink.WIRED, f"wired {wired.state}")
        if lte.usable:
            booting = not self.history and not wired.known
            if booting and now - self._started < self.config.startup_grace_s:
                return None  # give the wired line its first verdict before settling on LTE
            return self._switch(
                TransitionKind.RECOVERED, Uplink.LTE, f"lte {lte.state}; wired: {wired.reason}"
            )
        return None

    def _switch(self, kind: TransitionKind, to: Uplink, reason: str) -> Transition:
        t = Transition(kind, self._active, to, reason, self._clock())
        self._active = to
        self._since = t.at
        self.history.append(t)
        return t


# --------------------------------------------------------------------------- analysis


def exchange_failure_probability(packet_loss: float, attempts: int, packets: int = 2) -> float:
    """P(a probe fails) when each attempt needs ``packets`` to survive independent loss."""
    if not 0 <= packet_loss <= 1:
        raise DecisionConfigError("packet_loss", packet_loss, "must be in [0, 1]")
    _count("attempts", attempts)
    _count("packets", packets)
    return float((1.0 - (1.0 - packet_loss) ** packets) ** attempts)


def round_failure_probability(probe_failure: float, targets: int, quorum: int) -> float:
    """P(fewer than ``quorum`` of ``targets`` independent probes succeed)."""
    if not 0 <= probe_failure <= 1:
        raise DecisionConfigError("probe_failure", probe_failure, "must be in [0, 1]")
    _count("targets", targets)
    _count("quorum", quorum)
    if quorum > targets:
        raise DecisionConfigError("quorum", quorum, f"must not exceed targets ({targets})")
    q = 1.0 - probe_failure
    return sum(math.comb(targets, k) * q**k * probe_failure ** (targets - k) for k in range(quorum))


def false_down_rate_per_hour(
    round_failure: float, down_after_rounds: int, round_interval_s: float
) -> float:
    """Expected runs of ≥ N consecutive failed rounds per hour (each is a false 'down')."""
    _count("down_after_rounds", down_after_rounds)
    _positive("round_interval_s", round_interval_s)
    rounds_per_hour = 3600.0 / round_interval_s
    return rounds_per_hour * (1.0 - round_failure) * round_failure**down_after_rounds


def false_down_rate_for(config: MonitorConfig, packet_loss: float) -> float:
    """``false_down_rate_per_hour`` for a config and an independent per-packet loss."""
    p = exchange_failure_probability(packet_loss, config.attempts)
    r = round_failure_probability(p, config.targets, config.quorum)
    return false_down_rate_per_hour(r, config.down_after_rounds, config.round_interval_s)


def rounds_to_detect(config: MonitorConfig) -> int:
    """Failed rounds (every probe failing) the down test needs for a blackhole."""
    if config.detector == "rounds":
        return config.down_after_rounds
    test = SequentialTest(config)
    evidence = math.ceil(test.threshold / test.llr(config.targets, config.targets) - 1e-9)
    guard = math.ceil(config.min_outage_s / config.round_interval_s - 1e-9) + 1
    return max(evidence, guard)


def detection_time_bounds_s(config: MonitorConfig) -> tuple[float, float]:
    """(best, worst) seconds from a blackhole to ``down`` (rounds not waiting on each other)."""
    n, i, t = rounds_to_detect(config), config.round_interval_s, config.probe_timeout_s
    return (n - 1) * i + t, n * i + t


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


# --------------------------------------------------------------------------- LTE data budget

SECONDS_PER_MONTH = 30.4375 * 86400  # an average month
LTE_BUDGET_BYTES = 5_000_000


def monthly_probe_bytes(bytes_per_round: float, interval_s: float) -> float:
    _positive("interval_s", interval_s)
    return bytes_per_round * SECONDS_PER_MONTH / interval_s


def standby_probe_interval_s(
    bytes_per_round: float,
    budget_bytes: float = LTE_BUDGET_BYTES,
    *,
    headroom: float = 0.8,
    min_interval_s: float = 1.0,
) -> float:
    """Seconds between LTE standby rounds: bytes/round * rounds/month <= headroom * budget.

    E.g. on 5 MB/month with 20 % headroom: an ICMP-only round (88 bytes) every
    58 s, ICMP + DNS (~230 bytes) every 150 s, ICMP + DNS + TCP (~620 bytes)
    every 406 s; one HTTPS probe (~5 KB) alone would allow one round an hour.
    The headroom leaves room for retransmissions, failed rounds and the faster
    probing while LTE is being evaluated.
    """
    _positive("bytes_per_round", bytes_per_round)
    _positive("budget_bytes", budget_bytes)
    if not 0 < headroom <= 1:
        raise DecisionConfigError("headroom", headroom, "must be in (0, 1]")
    rounds = budget_bytes * headroom / bytes_per_round
    return max(min_interval_s, SECONDS_PER_MONTH / rounds)


def adaptive_standby_interval_s(
    used_bytes: float,
    elapsed_s: float,
    bytes_per_round: float,
    budget_bytes: float = LTE_BUDGET_BYTES,
    *,
    min_interval_s: float = 10.0,
    max_interval_s: float = 3600.0,
) -> float:
    """Interval that spends what is left of this month's budget evenly over what is left.

    ``used_bytes`` are the LTE probe bytes counted so far this month (the
    probes' byte counter), ``elapsed_s`` how far into the month we are.
    """
    _positive("bytes_per_round", bytes_per_round)
    _positive("budget_bytes", budget_bytes)
    remaining_s = max(0.0, SECONDS_PER_MONTH - elapsed_s)
    remaining_bytes = budget_bytes - used_bytes
    if remaining_bytes < bytes_per_round:
        return max_interval_s
    rounds = remaining_bytes / bytes_per_round
    return min(max_interval_s, max(min_interval_s, remaining_s / rounds))
