"""The decisions' parameters, checked when built (a bad value raises
``DecisionConfigError`` naming it), and the loss model they are checked against:
``exchange_failure_probability``, P(a probe fails) under independent loss."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from failover.errors import DecisionConfigError

__all__ = [
    "DETECTORS",
    "Detector",
    "MonitorConfig",
    "SelectorConfig",
    "check_count",
    "check_positive",
    "exchange_failure_probability",
]

Detector = Literal["rounds", "sequential"]
DETECTORS: tuple[Detector, ...] = ("rounds", "sequential")


def check_positive(name: str, value: float) -> None:
    if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
        raise DecisionConfigError(name, value, "must be a positive number")


def check_non_negative(name: str, value: float) -> None:
    if not (isinstance(value, int | float) and math.isfinite(value) and value >= 0):
        raise DecisionConfigError(name, value, "must be a number >= 0")


def check_fraction(name: str, value: float) -> None:
    """A share such as a loss rate: in (0, 1]."""
    if not (isinstance(value, int | float) and 0 < value <= 1):
        raise DecisionConfigError(name, value, "must be a fraction in (0, 1]")


def check_count(name: str, value: int, minimum: int = 1) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise DecisionConfigError(name, value, f"must be an integer >= {minimum}")


def exchange_failure_probability(packet_loss: float, attempts: int, packets: int = 2) -> float:
    """P(a probe fails) when each attempt needs ``packets`` to survive independent loss."""
    if not 0 <= packet_loss <= 1:
        raise DecisionConfigError("packet_loss", packet_loss, "must be in [0, 1]")
    check_count("attempts", attempts)
    check_count("packets", packets)
    return float((1.0 - (1.0 - packet_loss) ** packets) ** attempts)


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
    # quiet pacing (failover.quiet): rounds every quiet_interval_s while the line answers
    # every probe within quiet_late_s for quiet_after_rounds rounds; None: always full rate
    quiet_interval_s: float | None = None
    quiet_late_s: float = 0.1
    quiet_after_rounds: int = 5

    def __post_init__(self) -> None:
        check_positive("round_interval_s", self.round_interval_s)
        check_positive("probe_timeout_s", self.probe_timeout_s)
        check_count("targets", self.targets)
        check_count("quorum", self.quorum)
        if self.quorum > self.targets:
            raise DecisionConfigError(
                "quorum", self.quorum, f"must not exceed targets ({self.targets})"
            )
        check_count("attempts", self.attempts)
        check_count("down_after_rounds", self.down_after_rounds)
        check_non_negative("stable_s", self.stable_s)
        check_count("startup_rounds", self.startup_rounds)
        check_count("quality_rounds", self.quality_rounds)
        check_fraction("degraded_loss", self.degraded_loss)
        check_positive("degraded_latency_ms", self.degraded_latency_ms)
        if self.detector not in DETECTORS:
            raise DecisionConfigError("detector", self.detector, f"must be one of {DETECTORS}")
        if not 0 < self.design_loss < 1:
            raise DecisionConfigError("design_loss", self.design_loss, "must be in (0, 1)")
        p0 = exchange_failure_probability(self.design_loss, self.attempts)
        if not p0 < self.dead_probe_failure < 1:
            raise DecisionConfigError(
                "dead_probe_failure", self.dead_probe_failure,
                f"must be in ({p0:.4g}, 1): above the probe failure at design_loss")
        check_positive("false_alarms_per_hour", self.false_alarms_per_hour)
        if not (isinstance(self.min_outage_s, int | float) and 0 <= self.min_outage_s < 60):
            raise DecisionConfigError("min_outage_s", self.min_outage_s, "must be in [0, 60)")
        if self.quiet_interval_s is not None:
            check_positive("quiet_interval_s", self.quiet_interval_s)
        check_positive("quiet_late_s", self.quiet_late_s)
        check_count("quiet_after_rounds", self.quiet_after_rounds)


@dataclass(frozen=True, slots=True)
class SelectorConfig:
    failback_stable_s: float = 30.0
    startup_grace_s: float = 5.0  # at boot, wait this long for a wired verdict before LTE

    def __post_init__(self) -> None:
        check_non_negative("failback_stable_s", self.failback_stable_s)
        check_non_negative("startup_grace_s", self.startup_grace_s)
