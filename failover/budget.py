"""The LTE data budget: how often LTE may be probed while it stands by.

LTE is billed; while it is not carrying traffic it is probed sparsely, so that a
month of standby rounds fits ``LTE_BUDGET_BYTES`` (5 MB) with headroom, and more
sparsely still when the month's spending runs ahead (``failover.engine`` says when
LTE is probed at its full rate instead).
"""

from __future__ import annotations

from failover.config import check_positive
from failover.errors import DecisionConfigError

__all__ = [
    "LTE_BUDGET_BYTES",
    "SECONDS_PER_MONTH",
    "adaptive_standby_interval_s",
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
