"""Taking a payment: idempotency, online first within a deadline, else the box stands in.

The order of durable steps is what makes every answer safe to give:

1. `begin_online` commits the payment (card sealed, no CVC) *before* any byte goes to
   the gateway, so an answer lost mid-attempt can always be resolved later.
2. Online: the payment id is the gateway Idempotency-Key for every attempt, and the
   body is identical each time (``captured_at`` is the stored creation time), so a
   retry is a replay, never a second charge.
3. No answer in time, or no uplink: the risk rules decide, and `stand_in` commits
   (fsync'd) *before* the POS hears ``approved_offline``. An attempt whose answer was
   lost is stood in with an unknown outcome: the forwarder looks it up before it sends
   anything else.

The answer to the POS is a pure function of the stored row, so a replay under the same
Idempotency-Key returns exactly the first answer, also after a crash.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from payments_cache.async_store import AsyncStore
from payments_cache.claims import Claims
from payments_cache.crypto import request_hash
from payments_cache.errors import (
    GatewayRejected,
    GatewayUnavailable,
    InvalidTransition,
    PaymentsError,
    UnknownOutcome,
)
from payments_cache.gateway import AuthorizationPayload, Gateway
from payments_cache.models import (
    ForwardState,
    GatewayResult,
    Payment,
    PaymentRequest,
    PaymentStatus,
    QueueStats,
)
from payments_cache.risk import CardVelocity, QueueSnapshot, RiskDecision, RiskLimits, evaluate
from payments_cache.uplinks import UplinkSignal
from payments_cache.validation import parse_idempotency_key, parse_payment_request
from payments_cache.wallclock import wall_unset

log = logging.getLogger(__name__)

#: A lost answer is asked for again only while this much of the online deadline is left:
#: a new connection (over the other uplink, perhaps with a TLS handshake) needs about that.
REPLAY_MIN_S = 0.3

EventCallback = Callable[..., None]


@dataclass(frozen=True)
class _MaybeSent:
    """An online attempt that may have reached the gateway and may still arrive there
    until `until`; `rejected`: the gateway refused it (a 4xx other than 401/403)."""

    until: datetime
    rejected: bool = False


class PaymentBusy(PaymentsError):
    """Another attempt (the forwarder) is resolving this payment right now (503)."""

    def __init__(self, payment_id: str) -> None:
        self.payment_id = payment_id
        super().__init__(f"payment {payment_id!r} is being resolved; ask again shortly")


class IdempotencyConflict(PaymentsError):
    """The Idempotency-Key was used before with a different body (409)."""

    def __init__(self, key: str, payment_id: str) -> None:
        self.key = key
        self.payment_id = payment_id
        super().__init__(f"Idempotency-Key {key!r} was used for another request ({payment_id})")


@dataclass(frozen=True)
class ServiceSettings:
    merchant_id: str
    online_deadline_s: float = 3.0
    #: After the gateway could not be reached, stand in at once for this long.
    unreachable_pause_s: float = 2.0
    #: How long after its deadline an online attempt whose answer was lost may still
    #: reach the gateway (queued in a load balancer or proxy): before then, the gateway's
    #: "not found" proves nothing.
    lost_attempt_lifetime_s: float = 60.0
    #: How many times an answer lost with its connection is asked for again (see
    #: `PaymentService._authorize`); 0: never.
    online_replays: int = 2
    limits: RiskLimits = field(default_factory=RiskLimits)


_FORWARDING = {ForwardState.QUEUED: "queued", ForwardState.UNKNOWN: "queued",
               ForwardState.FORWARDED: "forwarded", ForwardState.DEAD: "dead"}
_ONLINE = (PaymentStatus.APPROVED, PaymentStatus.DECLINED)


def answer(payment: Payment) -> dict[str, Any]:
    """The POS answer (docs/openapi.json), derived from the stored row alone."""
    return {
        "id": payment.id,
        "status": payment.status.value,
        "mode": "online" if payment.status in _ONLINE else "offline",
        "auth_code": payment.auth_code if payment.status in _ONLINE else None,
        "decline_reason": payment.decline_reason if payment.status in (
            PaymentStatus.DECLINED, PaymentStatus.DECLINED_OFFLINE) else None,
        "card": {"brand": payment.brand, "last4": payment.last4},
        "amount": payment.amount,
        "currency": payment.currency,
        "reference": payment.reference,
        "created_at": payment.created_at.isoformat(timespec="milliseconds"),
    }


def detail(payment: Payment) -> dict[str, Any]:
    """`GET /v1/payments/{id}`: the answer plus how forwarding stands."""
    doc = answer(payment)
    state = _FORWARDING.get(payment.forward_state)
    if payment.status is PaymentStatus.APPROVED_OFFLINE or state is not None:
        settled = state in ("forwarded", "dead")
        doc["forwarding"] = {
            "state": "stuck" if payment.stuck_at and state == "queued" else state or "queued",
            "final_status": payment.final_status if settled else None,
            "auth_code": payment.auth_code if settled else None,
            "decline_code": payment.decline_reason if settled and payment.status
            is PaymentStatus.APPROVED_OFFLINE and payment.final_status == "declined" else None,
            "attempts": payment.attempts,
        }
    else:
        doc["forwarding"] = None
    return doc


class _KeyLocks:
    """One asyncio.Lock per Idempotency-Key, dropped when nobody holds or waits for it."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    @contextlib.asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        lock, users = self._locks.get(key, (asyncio.Lock(), 0))
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users == 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)


class PaymentService:
    def __init__(self, store: AsyncStore, gateway: Gateway, uplinks: UplinkSignal,
                 settings: ServiceSettings, *,
                 wall: Callable[[], float] = time.time,
                 monotonic: Callable[[], float] = time.monotonic,
                 on_event: EventCallback | None = None,
                 on_change: Callable[[], None] | None = None,
                 can_protect: Callable[[], bool] = lambda: True,
                 claims: Claims | None = None,
                 on_lost_attempt: Callable[[str, float], None] | None = None) -> None:
        self.store = store
        #: Told of every attempt that may still reach the gateway, and for how long (s):
        #: the forwarder's monotonic guard (a wall clock set forward ends nothing early).
        self._on_lost_attempt = on_lost_attempt
        #: Shared with the forwarder: who is sending which payment right now.
        self.claims = claims or Claims()
        #: False while the box has no acceptable way to keep a card (a configured seal
        #: key that cannot be read, with only a key on disk to fall back on): offline
        #: payments are then declined `cannot_protect_card`.
        self.can_protect = can_protect
        self.gateway = gateway
        self.uplinks = uplinks
        self.settings = settings
        self._wall = wall
        self._monotonic = monotonic
        self._on_event = on_event
        self._on_change = on_change
        self._keys = _KeyLocks()
        self._stand_in_lock = asyncio.Lock()
        self.last_mode: str = "unknown"
        self._unreachable_until = float("-inf")
        self._unreachable_generation = uplinks.generation

    def reconfigure(self, settings: ServiceSettings) -> None:
        """Apply new limits and deadline (SIGHUP); payments in flight keep the old ones."""
        self.settings = settings

    async def submit(self, idempotency_key: str | None, body: bytes) -> dict[str, Any]:
        """Take one payment; raises InvalidRequest, IdempotencyConflict, StorageUnavailable."""
        key = parse_idempotency_key(idempotency_key)
        request = parse_payment_request(body, self._today())
        async with self._keys.hold(key):
            found = await self.store.lookup_idempotency(key)
            if found is not None:
                payment, stored_hash = found
                if stored_hash is not None and stored_hash != request_hash(request):
                    raise IdempotencyConflict(key, payment.id)
                if payment.status is not PaymentStatus.PENDING:
                    return answer(payment)
                payment = await self._resume(payment, request)
            elif not self._online_worth_trying():
                payment = await self._take_offline(key, request)
            else:
                payment = await self.store.begin_online(key, request)
                payment = await self._decide(payment, request, self._lost_until_now())
        self._changed()
        return answer(payment)

    async def _resume(self, payment: Payment, request: PaymentRequest) -> Payment:
        """A PENDING payment found under its key: an earlier attempt was cut short (a
        restart, or its stand-in could not be stored) and may have reached the gateway,
        whatever this process remembers. Re-driven under a claim, so the forwarder does
        not resolve it at the same time."""
        log.info("payment %s: resuming an interrupted attempt", payment.id)
        async with self.claims.waiting(payment.id, self.settings.online_deadline_s) as got:
            if not got:
                raise PaymentBusy(payment.id)
            current = await self._current(payment.id)
            if current.status is not PaymentStatus.PENDING:
                return current  # resolved meanwhile (the forwarder's lookup)
            return await self._decide(current, request, self._lost_until_now(),
                                      self._earlier_window(current))

    def _earlier_window(self, current: Payment) -> datetime:
        """Until when the cut-short attempt may still reach the gateway: the later of its
        stored window (kept in step with the clock by the store) and one from its creation
        time. Never
        beyond a whole window from now: that attempt began before now, and a creation
        time written under a clock set back since would otherwise hold it for hours."""
        found = max(filter(None, (current.lost_attempt_until,
                                  self._lost_until(current.created_at))))
        return min(found, self._lost_until_now())

    async def get(self, payment_id: str) -> dict[str, Any] | None:
        payment = await self.store.get(payment_id)
        return None if payment is None else detail(payment)

    def _online_worth_trying(self) -> bool:
        """False when no uplink works, or the gateway could not be reached moments ago
        (then the answer comes at once instead of after the online deadline)."""
        if not self.uplinks.worth_trying():
            return False
        if self.uplinks.generation != self._unreachable_generation:
            return True  # traffic moved to another uplink since: try it
        return asyncio.get_running_loop().time() >= self._unreachable_until

    def _note_unreachable(self, generation: int) -> None:
        """An attempt started on path `generation` could not reach the gateway. An attempt
        that began before traffic moved says nothing about the new path: ignored."""
        if generation != self.uplinks.generation:
            return
        self._unreachable_generation = generation
        self._unreachable_until = (asyncio.get_running_loop().time()
                                   + self.settings.unreachable_pause_s)

    async def _take_offline(self, key: str, request: PaymentRequest) -> Payment:
        """Straight to the stand-in: risk check and store in one transaction."""
        window = timedelta(seconds=self.settings.limits.velocity_window_s)
        stored = await self.store.take_offline(key, request, self._decider(request),
                                               self._now() - window)
        self._after_stand_in(stored)
        return stored

    def _decider(self, request: PaymentRequest) -> Callable[[QueueStats, tuple[int, int]],
                                                             RiskDecision]:
        limits, now, today = self.settings.limits, self._now(), self._today()
        protectable = self.can_protect()
        unset = wall_unset(now)

        def decide(stats: QueueStats, velocity: tuple[int, int]) -> RiskDecision:
            if not protectable:
                return RiskDecision.decline("cannot_protect_card")
            if unset:  # no date to judge the card's expiry or the queue's age by
                return RiskDecision.decline("clock_unset")
            oldest = None if stats.oldest_created_at is None else max(
                0.0, (now - stats.oldest_created_at).total_seconds())
            queue = QueueSnapshot(stats.count, stats.amount, oldest, stats.amount_by_currency)
            return evaluate(request, limits, queue, CardVelocity(*velocity), today)
        return decide

    async def _decide(self, payment: Payment, request: PaymentRequest, lost_until: datetime,
                      earlier: datetime | None = None) -> Payment:
        """Online if worth trying, else (or when that fails) stand in. `lost_until`: until
        when this attempt may still reach the gateway once sent; `earlier`: the same for
        an earlier attempt that may have been sent."""
        if self._online_worth_trying():
            outcome = await self._online(payment, request, lost_until)
            if isinstance(outcome, Payment):
                return outcome
            if outcome is not None and outcome.rejected:
                return await self._stand_in(payment, request, outcome.until,
                                            RiskDecision.decline("gateway_rejected"))
            if outcome is not None:
                earlier = max(filter(None, (earlier, outcome.until)))
        return await self._stand_in(payment, request, earlier)

    def _lost_until_now(self) -> datetime:
        return self._lost_until(self._now())

    def _lost_until(self, started: datetime) -> datetime:
        return started + timedelta(seconds=self.settings.online_deadline_s
                                   + self.settings.lost_attempt_lifetime_s)

    async def _online(self, payment: Payment, request: PaymentRequest,
                      lost_until: datetime) -> Payment | _MaybeSent | None:
        """The settled payment; or, when the attempt may have reached the gateway, until
        when it may still arrive there; None when it certainly did not."""
        payload = AuthorizationPayload(
            payment_id=payment.id, amount=request.amount, currency=request.currency,
            card=request.card, merchant_id=self.settings.merchant_id, offline=False,
            captured_at=payment.created_at, terminal_id=request.terminal_id,
            reference=request.reference)
        path = self.uplinks.generation
        try:
            result = await self._authorize(payload)
        except GatewayUnavailable as exc:
            log.info("payment %s: gateway unavailable online (%s)", payment.id, exc.reason)
            if exc.status is None:  # never connected: nothing was sent
                self._note_unreachable(path)
                return None
            if exc.status == 429:  # refused before processing (rate limit)
                return None
            return _MaybeSent(lost_until)  # a 5xx/409 came from something that had it
        except UnknownOutcome as exc:
            log.warning("payment %s: online answer lost (%s)", payment.id, exc.reason)
            if exc.timed_out:
                self._note_unreachable(path)
            return _MaybeSent(lost_until)
        except GatewayRejected as exc:
            log.error("payment %s: gateway refused the online request with %d (%s)",
                      payment.id, exc.status, exc.reason)
            if exc.status in (401, 403):  # the merchant key, not the payment: not processed
                self._note_unreachable(path)
                return None
            return _MaybeSent(lost_until, rejected=True)  # a decline, looked up before closed
        if self.last_mode == "offline":
            self._emit("offline_mode", message="gateway reachable again: online", online=True,
                       payment_id=payment.id)
        self.last_mode = "online"
        try:
            return await self.store.settle_online(payment.id, result)
        except InvalidTransition:
            return await self._current(payment.id)

    async def _authorize(self, payload: AuthorizationPayload) -> GatewayResult:
        """The gateway's answer within the online deadline. An answer lost with its
        connection (reset or closed, not a timeout: e.g. the route to the gateway moved to
        the other uplink and the box closed the old path's sockets) is asked for again on a
        new connection while enough of the deadline is left. The same key and body make it
        a replay: the gateway returns the stored result and never charges twice
        (docs/gateway-protocol.md, Idempotency), as payment SDKs retry a lost connection
        under an idempotency key. Without it a sale the gateway approved would be stood in,
        and perhaps declined offline while the customer is charged."""
        deadline = self._monotonic() + self.settings.online_deadline_s
        replays = 0
        while True:
            try:
                return await self.gateway.authorize(payload, deadline - self._monotonic())
            except UnknownOutcome as exc:
                left = deadline - self._monotonic()
                if (exc.timed_out or exc.malformed or left < REPLAY_MIN_S
                        or replays >= self.settings.online_replays):
                    raise
                replays += 1
                log.info("payment %s: answer lost (%s); asking again under the same key "
                         "(%.1f s left)", payload.payment_id, exc.reason, left)

    async def _stand_in(self, payment: Payment, request: PaymentRequest,
                        lost_until: datetime | None,
                        decision: RiskDecision | None = None) -> Payment:
        """`lost_until`: an attempt may have reached the gateway and may still arrive
        until then (the forwarder looks it up before anything else). `decision`: given
        (a decline), or made by the risk rules."""
        if lost_until is not None and self._on_lost_attempt is not None:
            self._on_lost_attempt(payment.id, max(0.0, (lost_until - self._now())
                                                  .total_seconds()))
        async with self._stand_in_lock:
            decision = decision or await self._risk(request)
            try:
                stored = await self.store.stand_in(payment.id, decision,
                                                   outcome_unknown=lost_until is not None,
                                                   lost_attempt_until=lost_until)
            except InvalidTransition:  # resolved meanwhile (forwarder lookup)
                return await self._current(payment.id)
        self._after_stand_in(stored)
        return stored

    def _after_stand_in(self, stored: Payment) -> None:
        if self.last_mode != "offline":
            why = ("no uplink reaches the gateway" if not self.uplinks.worth_trying()
                   else "the gateway did not answer in time")
            self._emit("offline_mode", message=f"{why}: standing in",
                       payment_id=stored.id)
        self.last_mode = "offline"
        if stored.status is PaymentStatus.APPROVED_OFFLINE:
            log.info("payment %s approved offline (%d %s)", stored.id, stored.amount,
                     stored.currency)
        else:
            log.info("payment %s declined offline: %s", stored.id, stored.decline_reason)

    async def _risk(self, request: PaymentRequest) -> RiskDecision:
        window = timedelta(seconds=self.settings.limits.velocity_window_s)
        stats = await self.store.queue_totals()  # O(1); the counts by state are not needed
        velocity = await self.store.card_velocity(request.card.pan, self._now() - window)
        return self._decider(request)(stats, velocity)

    async def _current(self, payment_id: str) -> Payment:
        payment = await self.store.get(payment_id)
        assert payment is not None
        return payment

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self._wall(), UTC)

    def _today(self) -> date:
        return self._now().date()

    def _emit(self, kind: str, **fields: Any) -> None:
        if self._on_event is not None:
            self._on_event(kind, **fields)

    def _changed(self) -> None:
        if self._on_change is not None:
            self._on_change()
