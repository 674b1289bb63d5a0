"""The LTE data budget: how often LTE may be probed while it stands by.

LTE is billed; while it is not carrying traffic it is probed sparsely, so that a
month of standby rounds fits ``LTE_BUDGET_BYTES`` (5 MB) with headroom, and more
sparsely still when the month's spending runs ahead (``failover.engine`` says when
LTE is probed at its full rate instead).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from failover.config import check_positive
from failover.errors import DecisionConfigError
from failover.link import Monotonic
from failover.targets import ProbeTarget, TargetKind

__all__ = [
    "LTE_BUDGET_BYTES",
    "ROUND_BYTES_ESTIMATE",
    "SECONDS_PER_MONTH",
    "LteBudget",
    "adaptive_standby_interval_s",
    "estimate_round_bytes",
    "monthly_probe_bytes",
    "standby_probe_interval_s",
]

SECONDS_PER_MONTH = 30.4375 * 86400  # an average month
LTE_BUDGET_BYTES = 5_000_000


def monthly_probe_bytes(bytes_per_round: float, interval_s: float) -> float:
    check_positive("interval_s", interval_s)
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
    check_positive("bytes_per_round", bytes_per_round)
    check_positive("budget_bytes", budget_bytes)
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
    check_positive("bytes_per_round", bytes_per_round)
    check_positive("budget_bytes", budget_bytes)
    remaining_s = max(0.0, SECONDS_PER_MONTH - elapsed_s)
    remaining_bytes = budget_bytes - used_bytes
    if remaining_bytes < bytes_per_round:
        return max_interval_s
    rounds = remaining_bytes / bytes_per_round
    return min(max_interval_s, max(min_interval_s, remaining_s / rounds))


# IP-level bytes one probe costs without loss (see failover.probes), per target kind.
ROUND_BYTES_ESTIMATE: dict[TargetKind, int] = {
    TargetKind.ICMP: 88,
    TargetKind.DNS: 140,
    TargetKind.TCP: 380,
    TargetKind.HTTP: 920,
    TargetKind.HTTPS: 5000,
}
_NAME_LOOKUP_BYTES = 140  # a target given by name is resolved over the uplink first


def estimate_round_bytes(targets: Sequence[ProbeTarget]) -> int:
    """Bytes one round over ``targets`` costs on the wire, from the documented figures."""
    total = 0
    for target in targets:
        total += ROUND_BYTES_ESTIMATE[target.kind]
        if target.kind is not TargetKind.DNS and not target.host_is_ip:
            total += _NAME_LOOKUP_BYTES
    return total


class LteBudget:
    """What LTE's standby rounds spend this month, and so how far apart they go.

    Rounds taken while LTE is not the active uplink count against ``budget_bytes``
    (the rounds at full rate while LTE awaits a verdict too), and so do the bytes of
    payments steered around a brownout (``account_steered``); a month is
    ``SECONDS_PER_MONTH`` from the first one. The cost of a round is the documented
    estimate for its targets, or the measured average when larger.
    """

    def __init__(
        self,
        targets: Sequence[ProbeTarget],
        budget_bytes: float = LTE_BUDGET_BYTES,
        *,
        fixed_interval_s: float | None = None,
        monotonic: Monotonic = time.monotonic,
    ) -> None:
        self.budget_bytes = float(budget_bytes)
        self._targets = tuple(targets)
        self._fixed_interval_s = None if fixed_interval_s is None else float(fixed_interval_s)
        self._monotonic = monotonic
        self.standby_bytes = 0
        self.standby_rounds = 0
        self.steered_bytes = 0
        self._measured_round_bytes: float | None = None
        self._period_start = monotonic()
        self._period_bytes = 0

    @property
    def round_bytes(self) -> float:
        """Bytes one LTE round costs: the estimate, or the measured average when larger."""
        estimate = float(estimate_round_bytes(self._targets))
        measured = self._measured_round_bytes
        return estimate if measured is None else max(estimate, measured)

    def interval_s(self) -> float:
        """Seconds between LTE rounds while LTE is in hot standby."""
        if self._fixed_interval_s is not None:
            return self._fixed_interval_s
        per_round = self.round_bytes
        base = standby_probe_interval_s(per_round, self.budget_bytes)
        self._roll_period()
        elapsed = self._monotonic() - self._period_start
        adaptive = adaptive_standby_interval_s(
            self._period_bytes, elapsed, per_round, self.budget_bytes,
            min_interval_s=base, max_interval_s=max(base, 3600.0))
        return max(base, adaptive)

    def account(self, spent: int, ok: bool, *, idle: bool, standby: bool) -> None:
        """One LTE round's bytes; ``idle``: LTE was not the active uplink (they count)."""
        if spent > 0 and ok:
            previous = self._measured_round_bytes
            self._measured_round_bytes = (float(spent) if previous is None
                                          else 0.8 * previous + 0.2 * spent)
        if idle:
            self._roll_period()
            self.standby_bytes += spent
            self._period_bytes += spent
            if standby:
                self.standby_rounds += 1

    def account_steered(self, spent: int) -> None:
        """Bytes the payments steered to LTE moved (``failover.steering``): this month's
        spending, so standby probing slows to keep the month within budget."""
        self._roll_period()
        self.steered_bytes += spent
        self._period_bytes += spent

    def describe(self) -> dict[str, Any]:
        return {
            "interval_s": self.interval_s(),
            "bytes_per_round": self.round_bytes,
            "budget_bytes_per_month": self.budget_bytes,
            "standby_bytes": self.standby_bytes,
            "standby_rounds": self.standby_rounds,
            "steered_bytes": self.steered_bytes,
        }

    def _roll_period(self) -> None:
        now = self._monotonic()
        while now - self._period_start >= SECONDS_PER_MONTH:
            self._period_start += SECONDS_PER_MONTH
            self._period_bytes = 0
