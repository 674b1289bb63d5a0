"""How hard and how often the forwarder tries: its backoff and its tuning, one value.

The defaults are the firmware's; `firmware` sets `concurrency`, `not_found_confirm_s` and
`lost_attempt_s` from the configuration, tests shorten the rest.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import timedelta


@dataclass(frozen=True)
class Backoff:
    """Capped exponential backoff with jitter: ``min(cap, base * 2**(n-1))``, less up to
    `jitter` of it at random, and never less than a (bounded) Retry-After."""

    base_s: float = 2.0
    cap_s: float = 300.0
    jitter: float = 0.5
    max_retry_after_s: float = 3600.0

    def delay(self, attempt: int, rng: random.Random, retry_after_s: float | None = None) -> float:
        exp = min(self.cap_s, self.base_s * 2.0 ** min(max(0, attempt - 1), 32))
        delay = exp * (1 - self.jitter * rng.random())
        if retry_after_s is not None:
            delay = max(delay, self.retry_after(retry_after_s))
        return delay

    def retry_after(self, retry_after_s: float) -> float:
        return min(max(0.0, retry_after_s), self.max_retry_after_s)


@dataclass(frozen=True)
class ForwarderSettings:
    """The forwarder's tuning (`Forwarder`). Raises ValueError for `concurrency` < 1."""

    concurrency: int = 8                   # requests in flight at most
    backoff: Backoff = field(default_factory=Backoff)
    authorize_timeout_s: float = 15.0
    lookup_timeout_s: float = 10.0
    idle_poll_s: float = 30.0              # the longest sleep with nothing due
    min_poll_s: float = 0.25
    #: A PENDING row older than this has no attempt running: it is interrupted.
    stale_pending_after_s: float = 300.0
    recover_every_s: float = 60.0
    #: The first pause after the gateway could not be reached (doubling on a streak).
    unreachable_pause_s: float = 1.0
    #: The second "not found" that proves a payment never arrived comes this much later.
    not_found_confirm_s: float = 5.0
    #: A payment failing for reasons other than the network this often, or this long,
    #: is stuck (out of the queue until an operator requeues it).
    stuck_after_attempts: int = 10
    stuck_after_s: float = 6 * 3600.0
    #: Rejections in a row (no success between) that mean the gateway rejects everything.
    reject_breaker_after: int = 3
    #: `Forwarder.wake` waives the backoff at most this often.
    force_min_interval_s: float = 30.0
    #: How long an online attempt lost by this process may still reach the gateway.
    lost_attempt_s: float = 120.0

    def __post_init__(self) -> None:
        if self.concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {self.concurrency!r}")

    @property
    def stale_after(self) -> timedelta:
        return timedelta(seconds=self.stale_pending_after_s)

    @property
    def not_found_confirm(self) -> timedelta:
        return timedelta(seconds=self.not_found_confirm_s)

    @property
    def stuck_after(self) -> timedelta:
        return timedelta(seconds=self.stuck_after_s)
