"""The decisions' shared vocabulary: a link's state and status, the uplinks traffic
can use, and the transitions between them (``failover.decision`` explains the model).

Time is monotonic seconds throughout, from a ``Monotonic`` callable passed as
``monotonic=`` (``time.monotonic`` by default).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

__all__ = [
    "LinkChange",
    "LinkState",
    "LinkStatus",
    "Monotonic",
    "RoundOutcome",
    "RoundSample",
    "Transition",
    "TransitionKind",
    "Uplink",
]

Monotonic = Callable[[], float]


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


@dataclass(frozen=True, slots=True)
class Transition:
    """A decision to switch the active uplink; route control applies it make-before-break."""

    kind: TransitionKind
    from_uplink: Uplink
    to_uplink: Uplink
    reason: str
    at: float
