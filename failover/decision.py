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

``UplinkSelector`` picks ``wired | lte | none``: wired whenever usable
(up or degraded); LTE when wired is down and LTE is usable; none when neither
is (offline mode). Failback to wired needs wired good for ``failback_stable_s``
(30 s) — unless LTE itself is down, when any usable wired beats being offline.
Switches are decisions only; route control applies them make-before-break.
"""

from __future__ import annotations

import math
import statistics
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from failover.errors import DecisionConfigError

__all__ = [
    "SECONDS_PER_MONTH",
    "Clock",
    "LinkChange",
    "LinkMonitor",
    "LinkState",
    "LinkStatus",
    "MonitorConfig",
    "RoundOutcome",
    "RoundSample",
    "SelectorConfig",
    "Transition",
    "TransitionKind",
    "Uplink",
    "UplinkSelector",
    "adaptive_standby_interval_s",
    "detection_time_bounds_s",
    "exchange_failure_probability",
    "false_down_rate_for",
    "false_down_rate_per_hour",
    "monthly_probe_bytes",
    "round_failure_probability",
    "standby_probe_interval_s",
]

Clock = Callable[[], float]


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


@dataclass(frozen=True, slots=True)
class SelectorConfig:
    failback_stable_s: float = 30.0
    startup_grace_s: float = 5.0  # at boot, wait this long for a wired verdict before LTE

    def __post_init__(self) -> None:
        for name in ("failback_stable_s", "startup_grace_s"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value >= 0):
                raise DecisionConfigError(name, value, "must be a number >= 0")


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
            if self._consecutive_failures >= cfg.down_after_rounds:
                self._failed_before = True
                return self._set(
                    LinkState.DOWN, f"{self._consecutive_failures} consecutive failed rounds"
                )
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


def detection_time_bounds_s(config: MonitorConfig) -> tuple[float, float]:
    """(best, worst) seconds from a blackhole to ``down`` (rounds not waiting on each other)."""
    n, i, t = config.down_after_rounds, config.round_interval_s, config.probe_timeout_s
    return (n - 1) * i + t, n * i + t


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
