"""Forwards offline payments to the gateway, exactly once in effect (docs/gateway-protocol.md).

* Oldest first, at most `concurrency` requests in flight; each payment has its own
  ``next_attempt_at``, so one that keeps failing never holds back the others.
* A payment is claimed by at most one in-flight attempt (`claims.Claims`, shared with
  the POS service, which claims an interrupted payment before re-driving it), then
  a re-read of its state after claiming (a row fetched before another attempt finished
  with it is skipped), then compare-and-set updates in the store.
* Forward state UNKNOWN (an online attempt's answer was lost, or the box restarted
  mid-attempt): ``gateway.lookup`` first. Found → that result is recorded. Not found
  proves nothing while the lost attempt may still arrive (until `lost_attempt_until`:
  its deadline plus the gateway's lifetime of a request), and is trusted only when a
  second look `not_found_confirm_s` later agrees. Proven not received → an offline
  approval is authorized normally (and stays UNKNOWN until a definite answer, so every
  later attempt looks it up again); an offline decline or an interrupted PENDING row is
  closed with nothing owed.
* Authorization: ``offline=True``, ``captured_at=created_at``, no CVC, the payment id
  as Idempotency-Key, so every retry sends an identical body (a replay at the gateway).
  200 → FORWARDED (card erased); `GatewayUnavailable` / `UnknownOutcome` → retry with
  capped exponential backoff and jitter, never sooner than Retry-After (429/503 with
  Retry-After also hold *all* new requests until then); `GatewayRejected` → looked up
  once more (a 422 can mean the gateway already holds this id), then DEAD and reported.
* Events (`on_event(kind, **fields)`): ``declined_after_offline``, ``fault`` (dead,
  quarantined, outcome surprises, internal errors) and ``queue_drained``.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from payments_cache.async_store import AsyncStore
from payments_cache.claims import Claims
from payments_cache.errors import (
    GatewayError,
    GatewayRejected,
    GatewayUnavailable,
    RecordQuarantined,
    StorageUnavailable,
    UnknownOutcome,
)
from payments_cache.event_limit import EventLimiter
from payments_cache.forward_settings import ForwarderSettings
from payments_cache.gateway import AuthorizationPayload, Gateway
from payments_cache.models import ForwardState, GatewayResult, Payment, PaymentStatus
from payments_cache.store import MAX_DELAY

log = logging.getLogger(__name__)

EventCallback = Callable[..., None]

#: Statuses whose Retry-After speaks for the whole gateway, not just one payment.
_GLOBAL_HOLD_STATUSES = (429, 503)
#: How long a proof that the gateway answers lookups on its path holds (monotonic).
PATH_CHECK_EVERY_S = 600.0
#: A payment rejected this many times while the gateway is not rejecting everything is
#: dead (its own fault) even when no other payment went through meanwhile.
REJECTIONS_BEFORE_DEAD = 3
#: Statuses that refuse the box's credentials rather than the payment.
_CREDENTIAL_STATUSES = (401, 403)


@dataclass
class Counters:
    """Totals since the forwarder started (the store holds the durable ones)."""

    forwarded: int = 0
    declined_after_offline: int = 0
    resolved: int = 0
    retried: int = 0
    dead: int = 0
    quarantined: int = 0
    errors: int = 0


@dataclass
class DrainReport:
    """One `drain_once` pass: the ids in the order their attempts started, and outcomes."""

    started: list[str] = field(default_factory=list)
    outcomes: dict[str, str] = field(default_factory=dict)

    def count(self, outcome: str) -> int:
        return Counter(self.outcomes.values())[outcome]


class Forwarder:
    def __init__(self, store: AsyncStore, gateway: Gateway, merchant_id: str,
                 settings: ForwarderSettings | None = None, *,
                 wall: Callable[[], float] = time.time,
                 monotonic: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                 rng: random.Random | None = None, claims: Claims | None = None,
                 on_event: EventCallback | None = None) -> None:
        self._settings = settings = settings or ForwarderSettings()
        self._store = store
        self._gateway = gateway
        self._merchant_id = merchant_id
        self._mono = monotonic
        self._forced_at = float("-inf")
        #: Payments whose failure could not even be recorded: not before (monotonic).
        self._not_before: dict[str, float] = {}
        self._faults = EventLimiter(60.0, monotonic)
        #: Rejections in a row with no success between them, and the payments rejected
        #: once (with the success count then): a second rejection after others went
        #: through is the payment's own fault, not the gateway's.
        self._reject_streak: set[str] = set()
        self._successes = 0
        self._rejections: dict[str, tuple[int, int]] = {}  # id -> (successes then, count)
        self._storage_streak = 0
        self._first_not_found: dict[str, float] = {}  # id -> monotonic
        self._pending_seen: dict[str, float] = {}  # PENDING id -> first seen (monotonic)
        self._lost_deadlines: dict[str, float] = {}   # id -> monotonic
        self._started = monotonic()
        self._path_confirmed_at = float("-inf")
        self._wall = wall
        self._sleep = sleep
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not secrets
        self._on_event = on_event
        self._slots = asyncio.Semaphore(settings.concurrency)
        self._claims = claims or Claims()
        self._wake = asyncio.Event()
        self._force_next = False
        self._hold_until = float("-inf")
        self._drained_owed = False
        self._unreachable_streak = 0
        self._hold_is_unreachable = False
        self._recovered_at = float("-inf")
        self.counters = Counters()

    # control

    def wake(self) -> None:
        """An uplink came back: drain now. Per-payment backoff is waived at most once per
        `force_min_interval_s` (a flapping LTE link must not re-send everything on every
        flap); Retry-After holds and the grace period of interrupted payments still
        apply."""
        now = self._mono()
        if now - self._forced_at >= self._settings.force_min_interval_s:
            self._force_next = True
            self._forced_at = now
        if self._hold_is_unreachable:
            self._hold_until = float("-inf")
            self._hold_is_unreachable = False
        self._wake.set()

    async def run(self) -> None:
        """Drain, wait for the next due payment or `wake()`, repeat; until cancelled."""
        while True:
            try:
                await self.drain_once()
                delay = await self._next_delay()
            except StorageUnavailable as exc:
                delay = self._storage_failed(exc)
            except Exception as exc:  # a bug must not stop the forwarder
                log.exception("forwarder pass failed")
                self._fault("forwarder_pass_failed", error=str(exc))
                delay = self._settings.idle_poll_s
            await self._idle(delay)

    async def drain_once(self) -> DrainReport:
        """Attempt every payment due now once (oldest first), including ones that become
        due or are stored while this pass runs; return when none is left in flight."""
        force, self._force_next = self._force_next, False
        self._wake.clear()
        await self._follow_wall_steps()
        if self._mono() - self._recovered_at >= self._settings.recover_every_s:
            self._recovered_at = self._mono()
            await self._recover_stale()
        report = DrainReport()
        running: set[asyncio.Task[None]] = set()
        try:
            await self._drain(force, report, running)
        finally:
            for task in running:
                task.cancel()
            await asyncio.gather(*running, return_exceptions=True)
        await self._store.flush_erasures()
        await self._announce_if_drained()
        return report

    async def _drain(self, force: bool, report: DrainReport,
                     running: set[asyncio.Task[None]]) -> None:
        seen: set[str] = set()
        while True:
            rows = [] if self._held() else await self._store.due_for_forwarding(
                self._now(), limit=self._settings.concurrency,
                exclude=seen | self._claims.ids() | self._waiting(), ignore_backoff=force)
            if not rows and not running:
                return
            if not rows:
                _, pending = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                running.intersection_update(pending)
                continue
            for payment in rows:
                seen.add(payment.id)
                await self._slots.acquire()
                if self._held():
                    self._slots.release()
                    break
                report.started.append(payment.id)
                task = asyncio.create_task(self._attempt(payment, force, report))
                # a done callback runs even for a task cancelled before it started
                task.add_done_callback(self._release_slot)
                running.add(task)
            running.difference_update({t for t in running if t.done()})

    def _release_slot(self, _task: asyncio.Task[None]) -> None:
        self._slots.release()

    # one payment

    async def _attempt(self, payment: Payment, force: bool, report: DrainReport) -> None:
        """Claim, re-check, forward; the claim is released whatever happens."""
        if not self._claims.try_claim(payment.id):
            report.outcomes[payment.id] = "skipped"
            return
        try:
            report.outcomes[payment.id] = await self._claimed_attempt(payment.id, force)
        except StorageUnavailable as exc:
            report.outcomes[payment.id] = "held"
            self._storage_failed(exc)
        except Exception as exc:
            log.exception("forwarding %s failed", payment.id)
            report.outcomes[payment.id] = await self._failed(payment, exc)
        finally:
            self._claims.release(payment.id)

    async def _claimed_attempt(self, payment_id: str, force: bool) -> str:
        current = await self._store.get(payment_id)
        if current is None or not self._still_due(current, force):
            return "skipped"
        return await self._forward(current)

    def _still_due(self, payment: Payment, force: bool) -> bool:
        if payment.forward_state not in (ForwardState.QUEUED, ForwardState.UNKNOWN):
            return False
        if payment.quarantined:
            return False
        if force and payment.status is not PaymentStatus.PENDING:
            return True
        due, now = payment.next_attempt_at, self._now()
        # due beyond MAX_DELAY: set by a wall clock since set back (as `due_for_forwarding`)
        return due is None or due <= now or due > now + MAX_DELAY

    async def _forward(self, payment: Payment) -> str:
        try:
            if payment.forward_state is ForwardState.UNKNOWN:
                found = await self._gateway.lookup(payment.id, self._settings.lookup_timeout_s)
                if found is not None:
                    return await self._resolved(payment, found)
                if (wait := await self._not_found_wait(payment)) is not None:
                    return await self._look_again(payment, wait)
                if payment.status is not PaymentStatus.APPROVED_OFFLINE:
                    return await self._unreceived(payment)
            return await self._authorize(payment)
        except UnknownOutcome as exc:
            if exc.malformed:  # the gateway answered with something that is not a result
                return await self._failed(payment, exc)
            return await self._retry(payment, exc)
        except GatewayUnavailable as exc:
            return await self._retry(payment, exc)
        except GatewayRejected as exc:
            return await self._rejected(payment, exc)
        except RecordQuarantined as exc:
            return self._quarantined(payment, exc)

    async def _authorize(self, payment: Payment) -> str:
        card = await self._store.card_for_forwarding(payment.id)
        payload = AuthorizationPayload(
            payment_id=payment.id, amount=payment.amount, currency=payment.currency,
            card=card, merchant_id=payment.merchant_id or self._merchant_id, offline=True,
            captured_at=payment.created_at, terminal_id=payment.terminal_id,
            reference=payment.reference,
            card_hint={"brand": payment.brand, "last4": payment.last4})
        result = await self._gateway.authorize(payload, self._settings.authorize_timeout_s)
        return await self._resolved(payment, result)

    async def _not_found_wait(self, payment: Payment) -> tuple[datetime, bool] | None:
        """A "not found" proves the lost attempt never arrived only when all of these hold:

        * that attempt can no longer arrive: its lifetime has passed on this process's
          monotonic clock (registered by the service, or a whole lifetime after this
          process started for an attempt that died with an earlier one), and the stored
          wall time `lost_attempt_until` (kept in step with the clock by the store's
          wall frame) has passed too when it is plausible (at most one window ahead);
        * a second look, `not_found_confirm_s` later by the monotonic clock, agrees;
        * the gateway is known to answer lookups on its path: the breaker is closed and
          a payment it holds was found recently (a moved path or a misrouted proxy
          answers 404 for everything).

        Until then: when to look again, and whether this look counts as the first of the
        two. None: proven."""
        now, mono = self._now(), self._mono()
        if payment.lost_attempt_until is None and payment.status is \
                PaymentStatus.APPROVED_OFFLINE:
            return None  # only the offline form was ever sent: resending it is a replay
        if payment.lost_attempt_until is not None:
            # the stored wall time counts only while plausible: no further ahead than one
            # attempt's whole window (written under a clock set back since, across a
            # reboot, it would hold the payment for as long as the step)
            window = timedelta(seconds=self._settings.lost_attempt_s)
            if now < payment.lost_attempt_until <= now + window:
                return payment.lost_attempt_until, False
            if mono < self._lost_deadline(payment):
                return now + timedelta(seconds=self._lost_deadline(payment) - mono), False
        if not await self._lookups_trusted():
            self._first_not_found.pop(payment.id, None)
            return now + self._settings.not_found_confirm, False
        first = self._first_not_found.get(payment.id)
        if first is None:
            self._first_not_found[payment.id] = mono
            return now + self._settings.not_found_confirm, True
        if mono - first < self._settings.not_found_confirm.total_seconds():
            return now + timedelta(seconds=first + self._settings.not_found_confirm.total_seconds()
                                   - mono), False
        return None  # proven; it stays so (an identical offline body is safe to resend)

    def _lost_deadline(self, payment: Payment) -> float:
        """The monotonic time before which `payment`'s lost attempt may still arrive: as
        the service registered it, or — for a payment this process did not send — a whole
        lifetime after this process started (its attempt died with the process before)."""
        return self._lost_deadlines.get(payment.id, self._started + self._settings.lost_attempt_s)

    def lost_attempt(self, payment_id: str, lifetime_s: float) -> None:
        """The POS service sent `payment_id` and lost the answer: it may still arrive at
        the gateway for `lifetime_s` (monotonic)."""
        self._lost_deadlines[payment_id] = self._mono() + lifetime_s

    async def _lookups_trusted(self) -> bool:
        """Whether the gateway answers lookups on its path: the breaker is closed, and a
        payment it holds was found within `PATH_CHECK_EVERY_S` (looked up now if not)."""
        if self._breaker_open():
            return False
        mono = self._mono()
        if mono - self._path_confirmed_at < PATH_CHECK_EVERY_S:
            return True
        known = await self._store.a_payment_the_gateway_holds()
        if known is None:
            return True  # nothing to compare with: a new box
        try:
            found = await self._gateway.lookup(known, self._settings.lookup_timeout_s)
        except GatewayError:
            return False
        if found is None:
            self._fault("gateway_lookups_unreliable", payment_id=known,
                        message=f"the gateway says it never received {known}, which it "
                                "took: its lookups are not trusted (a moved path?)")
            return False
        self._path_confirmed_at = mono
        return True

    async def _look_again(self, payment: Payment, wait: tuple[datetime, bool]) -> str:
        at, trusted = wait
        if await self._store.note_not_found(payment.id, expect=payment, trusted=trusted,
                                            retry_at=at) is None:
            return "skipped"
        self.counters.retried += 1
        return "retry"

    # outcomes

    async def _resolved(self, payment: Payment, result: GatewayResult) -> str:
        if await self._store.record_forward_result(payment.id, result, expect=payment) is None:
            return "skipped"
        self._gateway_accepts()
        self._drained_owed = True
        if payment.status is PaymentStatus.APPROVED_OFFLINE:
            return self._forwarded(payment, result)
        self.counters.resolved += 1
        if result.status == "approved":
            self._emit("fault", reason=f"approved_after_{payment.status.value}",
                       payment_id=payment.id, amount=payment.amount, currency=payment.currency,
                       message="the gateway approved a payment the POS was not told "
                               "was approved; check for a double payment")
        return "resolved"

    def _forwarded(self, payment: Payment, result: GatewayResult) -> str:
        self.counters.forwarded += 1
        if result.status == "declined":
            self.counters.declined_after_offline += 1
            self._emit("declined_after_offline", payment_id=payment.id, amount=payment.amount,
                       currency=payment.currency, decline_code=result.decline_code,
                       reference=payment.reference, terminal_id=payment.terminal_id,
                       last4=payment.last4, brand=payment.brand,
                       created_at=payment.created_at.isoformat(timespec="seconds"),
                       message=f"declined after offline approval: {payment.amount} "
                               f"{payment.currency} on …{payment.last4} "
                               f"(reference {payment.reference!r}, terminal "
                               f"{payment.terminal_id!r}); collect the payment again")
        return "forwarded"

    async def _unreceived(self, payment: Payment) -> str:
        if await self._store.close_unreceived(payment.id, expect=payment) is None:
            return "skipped"
        self._drained_owed = True
        self.counters.resolved += 1
        return "resolved"

    async def _retry(self, payment: Payment, exc: GatewayError, unknown: bool = False) -> str:
        if isinstance(exc, GatewayUnavailable) and exc.status is None and not unknown:
            return self._unreachable(exc)
        if isinstance(exc, UnknownOutcome) and exc.timed_out:
            # a gateway that swallows requests: hold everyone, not 15 s per payment
            self._unreachable(GatewayUnavailable(payment.id, exc.reason))
        else:
            self._unreachable_streak = 0
        retry_after = exc.retry_after_s if isinstance(exc, GatewayUnavailable) else None
        if isinstance(exc, GatewayUnavailable) and retry_after is not None \
                and exc.status in _GLOBAL_HOLD_STATUSES:
            self._hold_until = max(self._hold_until,
                                   self._mono() + self._settings.backoff.retry_after(retry_after))
            self._hold_is_unreachable = False
        delay = self._settings.backoff.delay(payment.attempts + 1, self._rng, retry_after)
        await self._store.schedule_retry(
            payment.id, expect=payment, at=self._now() + timedelta(seconds=delay),
            error=str(exc), unknown=unknown)
        self.counters.retried += 1
        return "retry"

    def _unreachable(self, exc: GatewayUnavailable) -> str:
        """The gateway cannot be reached at all: a property of the uplink, not of this
        payment. Hold every request for a growing interval (one probe per interval, no
        store write per payment) until it answers again or `wake()` says a link is back."""
        self._unreachable_streak += 1
        pause = min(self._settings.backoff.cap_s, self._settings.unreachable_pause_s
                    * 2.0 ** min(self._unreachable_streak - 1, 16))
        if self._mono() + pause > self._hold_until:
            self._hold_until = self._mono() + pause
            self._hold_is_unreachable = True
        if self._unreachable_streak == 1:
            log.warning("gateway unreachable (%s); pausing forwarding", exc.reason)
        self.counters.retried += 1
        return "held"

    async def _rejected(self, payment: Payment, exc: GatewayRejected) -> str:
        """Before declaring a payment dead, ask whether the gateway holds it after all.

        401/403 refuse the box's credentials, not the payment: forwarding pauses and a
        fault is reported; no payment is killed for a wrong or rotated merchant key."""
        if exc.status in _CREDENTIAL_STATUSES:
            if self._unreachable_streak == 0:
                self._emit("fault", reason="gateway_credentials_refused", status=exc.status,
                           message="the gateway refuses the merchant key; forwarding paused")
            return self._unreachable(GatewayUnavailable(payment.id, exc.reason, None,
                                                        exc.status))
        try:
            found = await self._gateway.lookup(payment.id, self._settings.lookup_timeout_s)
        except (GatewayUnavailable, UnknownOutcome) as lookup_exc:
            self._count_rejection(payment, exc)  # the breaker still sees the rejection
            return await self._retry(payment, lookup_exc, unknown=True)
        except GatewayRejected:
            found = None
        if found is not None:
            return await self._resolved(payment, found)
        error = f"gateway rejected with {exc.status}: {exc.reason}"
        if not self._payments_own_rejection(payment):
            return await self._reject_later(payment, exc, error)
        if await self._store.mark_dead(payment.id, expect=payment, error=error) is None:
            return "skipped"
        self._drained_owed = True
        self.counters.dead += 1
        self._emit("fault", reason="payment_dead", payment_id=payment.id, status=exc.status,
                   error=exc.reason, amount=payment.amount, currency=payment.currency)
        return "dead"

    # the gateway refusing everything (a moved path, a misrouted proxy)

    def _gateway_accepts(self) -> None:
        self._successes += 1
        self._path_confirmed_at = self._mono()
        if len(self._reject_streak) >= self._settings.reject_breaker_after:
            log.warning("the gateway accepts payments again")
        self._reject_streak.clear()
        self._storage_streak = 0

    def _breaker_open(self) -> bool:
        return len(self._reject_streak) >= self._settings.reject_breaker_after

    def _payments_own_rejection(self, payment: Payment) -> bool:
        """A rejection is the payment's own when the gateway took other payments since it
        was first rejected, or when it keeps being rejected while the others are not
        (the breaker closed)."""
        successes_then, count = self._rejections.get(payment.id, (self._successes, 0))
        self._rejections[payment.id] = (successes_then, count + 1)
        if self._successes > successes_then:
            return True
        return count + 1 >= REJECTIONS_BEFORE_DEAD and not self._breaker_open()

    def _count_rejection(self, payment: Payment, exc: GatewayRejected) -> None:
        """Different payments rejected in a row with no success in between open the
        breaker: forwarding pauses, one fault a minute."""
        self._reject_streak.add(payment.id)
        if not self._breaker_open():
            return
        pause = min(self._settings.backoff.cap_s, self._settings.backoff.base_s * 2.0 ** min(
            len(self._reject_streak) - self._settings.reject_breaker_after, 16))
        self._hold_until = max(self._hold_until, self._mono() + pause)
        self._hold_is_unreachable = False
        self._fault("gateway_rejects_everything", status=exc.status, error=exc.reason,
                    message=f"the gateway rejected {len(self._reject_streak)} payments in a "
                            f"row ({exc.status}); forwarding paused, nothing marked dead")

    async def _reject_later(self, payment: Payment, exc: GatewayRejected, error: str) -> str:
        """Not dead yet: retried with backoff. Different payments rejected in a row with
        no success in between open a breaker: forwarding pauses and one fault is
        reported, instead of the whole queue going dead over a gateway-side
        misconfiguration (a moved path, a misrouted proxy)."""
        self._count_rejection(payment, exc)
        delay = self._settings.backoff.delay(payment.attempts + 1, self._rng)
        await self._store.schedule_retry(payment.id, expect=payment,
                                         at=self._now() + timedelta(seconds=delay), error=error)
        self.counters.retried += 1
        return "retry"

    # failures that are not the network

    async def _failed(self, payment: Payment, exc: Exception) -> str:
        """An attempt failed for a reason other than the network (a bug, an answer that
        is not a result): retried with backoff; after `stuck_after_attempts` such
        failures or `stuck_after_s` of them, the payment is *stuck*: out of the queue and
        its age rule, still owed and counted in the caps, reported, until an operator
        requeues it."""
        self.counters.errors += 1
        error = f"{type(exc).__name__}: {exc}"
        delay = self._settings.backoff.delay(payment.error_attempts + 1, self._rng)
        first = payment.first_error_at or self._now()
        stuck = (payment.error_attempts + 1 >= self._settings.stuck_after_attempts
                 or self._now() - first >= self._settings.stuck_after)
        try:
            updated = await self._store.note_error(
                payment.id, expect=payment, error=error,
                retry_at=self._now() + timedelta(seconds=delay), stuck=stuck)
        except StorageUnavailable as storage:
            self._not_before[payment.id] = self._mono() + delay
            self._storage_failed(storage)
            return "error"
        if updated is None:
            return "skipped"
        if stuck:
            self._emit("fault", reason="payment_stuck", payment_id=payment.id,
                       amount=payment.amount, currency=payment.currency, error=error,
                       message=f"payment {payment.id} is stuck after "
                               f"{updated.error_attempts} failed attempts ({error}); "
                               "requeue it once the cause is fixed")
            return "stuck"
        self._fault("forwarding_error", payment_id=payment.id, error=error)
        return "error"

    def _storage_failed(self, exc: StorageUnavailable) -> float:
        """The store cannot be written (disk full, read-only): pause the forwarder with a
        growing interval; one fault per minute, however many payments are waiting."""
        self._storage_streak += 1
        pause = min(self._settings.backoff.cap_s, self._settings.backoff.base_s * 2.0 ** min(
            self._storage_streak - 1, 16))
        self._hold_until = max(self._hold_until, self._mono() + pause)
        self._hold_is_unreachable = False
        self._fault("storage_unavailable", error=str(exc),
                    message=f"the payment store cannot be written ({exc.reason}); "
                            "forwarding paused")
        return pause

    async def _recover_stale(self) -> None:
        """Interrupted PENDING rows: created longer ago than `stale_pending_after_s` by the
        wall clock, or seen pending that long by this process's monotonic clock (a row
        written while the wall clock was hours ahead looks young until it catches up)."""
        mono = self._mono()
        pending = await self._store.pending_ids()
        self._pending_seen = {pid: self._pending_seen.get(pid, mono) for pid in pending}
        limit = self._settings.stale_after.total_seconds()
        overdue = [pid for pid, seen in self._pending_seen.items() if mono - seen >= limit]
        await self._store.recover_stale_pending(self._now() - self._settings.stale_after, overdue)

    async def _follow_wall_steps(self) -> None:
        """A step of the wall clock since the last write moves the stored schedule now,
        before due times are compared (`payments_cache.wall_frame`)."""
        await self._store.follow_wall()

    def _waiting(self) -> set[str]:
        now = self._mono()
        for pid in [p for p, t in self._not_before.items() if t <= now]:
            del self._not_before[pid]
        return set(self._not_before)

    def _fault(self, reason: str, **fields: Any) -> None:
        """A fault event of a kind that can repeat: at most one a minute per reason."""
        held = self._faults.allow(reason)
        if held is None:
            return
        if held:
            fields["repeated"] = held
        self._emit("fault", reason=reason, **fields)

    def _quarantined(self, payment: Payment, exc: RecordQuarantined) -> str:
        self.counters.quarantined += 1
        self._emit("fault", reason="record_quarantined", payment_id=payment.id,
                   field=exc.field, error=exc.reason)
        return "quarantined"

    # timing

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self._wall(), UTC)

    def _held(self) -> bool:
        return self._mono() < self._hold_until

    async def _next_delay(self) -> float:
        due = await self._store.next_due_at()
        delay = self._settings.idle_poll_s if due is None else due.timestamp() - self._wall()
        delay = max(delay, self._hold_until - self._mono())
        return min(max(delay, self._settings.min_poll_s), self._settings.idle_poll_s)

    async def _idle(self, delay: float) -> None:
        if self._wake.is_set():
            return
        waker = asyncio.ensure_future(self._wake.wait())
        napper = asyncio.ensure_future(self._sleep(delay))
        try:
            await asyncio.wait({waker, napper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (waker, napper):
                task.cancel()
            await asyncio.gather(waker, napper, return_exceptions=True)

    # events

    async def _announce_if_drained(self) -> None:
        if not self._drained_owed:
            return
        stats = await self._store.queue_stats()
        if stats.count == 0 and self._drained_owed:
            self._drained_owed = False
            self._emit("queue_drained", forwarded_total=self.counters.forwarded,
                       declined_after_offline_total=self.counters.declined_after_offline,
                       dead=stats.by_state.get("dead", 0),
                       quarantined=stats.by_state.get("quarantined", 0))

    def _emit(self, kind: str, **fields: Any) -> None:
        if self._on_event is None:
            return
        try:
            self._on_event(kind, **fields)
        except Exception:
            log.exception("event callback failed for %r", kind)
