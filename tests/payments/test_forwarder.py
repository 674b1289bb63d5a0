"""The forwarder against an in-test fake gateway; a real store in tmp_path; injected clock."""

from __future__ import annotations

import asyncio
import random
import sqlite3
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from payments_cache.async_store import AsyncStore
from payments_cache.database import DB_NAME
from payments_cache.errors import (
    GatewayRejected,
    GatewayUnavailable,
    UnknownOutcome,
)
from payments_cache.forward_settings import Backoff, ForwarderSettings
from payments_cache.forwarder import Forwarder
from payments_cache.gateway import AuthorizationPayload
from payments_cache.models import (
    Card,
    ForwardState,
    GatewayResult,
    Payment,
    PaymentRequest,
    PaymentStatus,
    StandInDecision,
)
from tests.support.clock import T0, ManualClock

MERCHANT = "merchant-42"
PAN = "4111111111111111"
Script = list[BaseException | GatewayResult | None]


class NoJitter(random.Random):
    def random(self) -> float:
        return 0.0


class FakeGateway:
    """Implements the `Gateway` protocol with the gateway's idempotency rules (§5): the
    same id with the same body is a replay of the stored result, with another body 422."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []
        self.stored: dict[str, GatewayResult] = {}
        self.bodies: dict[str, dict[str, Any]] = {}
        self.processed: Counter[str] = Counter()
        self.authorize_script: dict[str, Script] = {}
        self.lookup_script: dict[str, Script] = {}
        self.decline: set[str] = set()
        self.gate: asyncio.Event | None = None
        self.in_flight = 0
        self.max_in_flight = 0
        self.started = asyncio.Event()

    def authorize_calls(self, payment_id: str | None = None) -> list[str]:
        return [pid for op, pid in self.calls
                if op == "authorize" and payment_id in (None, pid)]

    async def authorize(self, payload: AuthorizationPayload, timeout_s: float) -> GatewayResult:
        pid = payload.payment_id
        self.calls.append(("authorize", pid))
        body = payload.to_json()
        assert payload.offline and "cvc" not in body["card"]
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        self.started.set()
        try:
            if self.gate is not None:
                await self.gate.wait()
            for _ in range(3):
                await asyncio.sleep(0)  # let other tasks interleave
        finally:
            self.in_flight -= 1
        scripted = _next(self.authorize_script, pid)
        if isinstance(scripted, UnknownOutcome):  # processed, but the answer is lost
            self._process(pid, body, None)
            raise scripted
        if isinstance(scripted, BaseException):
            raise scripted
        return self._process(pid, body, scripted)

    def _process(self, pid: str, body: dict[str, Any],
                 scripted: GatewayResult | None) -> GatewayResult:
        if pid in self.bodies:
            if self.bodies[pid] != body:
                raise GatewayRejected(pid, 422, "idempotency key reused with another body")
            return self.stored[pid]
        self.bodies[pid] = body
        self.processed[pid] += 1
        result = scripted or (GatewayResult("declined", decline_code="do_not_honor")
                              if pid in self.decline else GatewayResult("approved", "A" + pid[-5:]))
        self.stored[pid] = result
        return result

    async def lookup(self, payment_id: str, timeout_s: float) -> GatewayResult | None:
        self.calls.append(("lookup", payment_id))
        await asyncio.sleep(0)
        scripted = _next(self.lookup_script, payment_id)
        if isinstance(scripted, BaseException):
            raise scripted
        return self.stored.get(payment_id)


def _next(script: dict[str, Script], pid: str) -> BaseException | GatewayResult | None:
    steps = script.get(pid)
    return steps.pop(0) if steps else None


@pytest.fixture
async def store(tmp_path: Path, clock: ManualClock) -> AsyncIterator[AsyncStore]:
    s = await AsyncStore.open(tmp_path / "state", tmp_path / "state" / "kek.key",
                              wall=clock.wall, monotonic=clock.monotonic, pending_grace_s=60)
    yield s
    await s.close()


@pytest.fixture
def gateway() -> FakeGateway:
    return FakeGateway()


@pytest.fixture
def events() -> list[tuple[str, dict[str, Any]]]:
    return []


def forwarder(store: AsyncStore, gateway: FakeGateway, clock: ManualClock,
              events: list[tuple[str, dict[str, Any]]], **tuning: Any) -> Forwarder:
    tuning.setdefault("backoff", Backoff(base_s=2.0, cap_s=10.0, jitter=0.5))
    tuning.setdefault("lost_attempt_s", 0.0)  # the monotonic guard: tests/payments/faults
    return Forwarder(store, gateway, MERCHANT, ForwarderSettings(**tuning), wall=clock.wall,
                     monotonic=clock.monotonic, rng=NoJitter(),
                     on_event=lambda kind, **fields: events.append((kind, fields)))


async def stand_in(store: AsyncStore, key: str, amount: int = 1000, *,
                   unknown: bool = False, approved: bool = True) -> Payment:
    request = PaymentRequest(amount, "KRW", Card(PAN, 12, 2030, cvc="123"), "pos-1", key)
    payment = await store.begin_online(key, request)
    # unknown: an online attempt was lost; its window (`lost_attempt_until`) is over now
    return await store.stand_in(payment.id, StandInDecision(approved, None if approved
                                                            else "amount_over_limit"),
                                outcome_unknown=unknown,
                                lost_attempt_until=payment.created_at if unknown else None)


async def state(store: AsyncStore, payment_id: str) -> Payment:
    payment = await store.get(payment_id)
    assert payment is not None
    return payment


def kinds(events: list[tuple[str, dict[str, Any]]]) -> list[str]:
    return [kind for kind, _ in events]


def at(seconds: float) -> datetime:
    return datetime.fromtimestamp(T0 + seconds, UTC)


# --- the normal path -------------------------------------------------------------------


async def test_forwards_oldest_first_with_an_offline_body(
        store: AsyncStore, gateway: FakeGateway, clock: ManualClock, events: list[Any]) -> None:
    clock.advance(30)
    c = await stand_in(store, "c")
    clock.step_wall(-20)
    a = await stand_in(store, "a")
    clock.advance(10)
    b = await stand_in(store, "b")
    clock.advance(100)
    fwd = forwarder(store, gateway, clock, events, concurrency=1)

    report = await fwd.drain_once()

    assert gateway.authorize_calls() == [a.id, b.id, c.id]
    assert report.started == [a.id, b.id, c.id] and report.count("forwarded") == 3
    body = gateway.bodies[a.id]
    assert body == {"payment_id": a.id, "amount": 1000, "currency": "KRW",
                    "card": {"pan": PAN, "exp_month": 12, "exp_year": 2030},
                    "terminal_id": "pos-1", "reference": "a", "merchant_id": MERCHANT,
                    "offline": True, "captured_at": at(10).isoformat(timespec="milliseconds")}
    for p in (a, b, c):
        done = await state(store, p.id)
        assert (done.forward_state, done.final_status, done.attempts) == (
            ForwardState.FORWARDED, "approved", 1)
        assert done.auth_code == "A" + p.id[-5:] and not done.has_card
        assert done.status is PaymentStatus.APPROVED_OFFLINE
    assert kinds(events) == ["queue_drained"]
    assert events[0][1]["forwarded_total"] == 3
    assert (await store.queue_stats()).count == 0
    assert (await fwd.drain_once()).started == []
    assert kinds(events) == ["queue_drained"], "drained is announced once, after work"


class CountingStore:
    """Passes every call through to the real `AsyncStore`, counting them."""

    def __init__(self, inner: AsyncStore) -> None:
        self.inner = inner
        self.calls = 0

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.inner, name)
        if not asyncio.iscoroutinefunction(attr):
            return attr

        async def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls += 1
            return await attr(*args, **kwargs)
        return counted


async def quiescent(spy: CountingStore, gateway: FakeGateway) -> None:
    """Return once the forwarder makes no more progress on its own: neither store calls
    nor requests in flight change across store round trips (the store's one thread runs
    calls in order, so a round trip lets everything submitted before it finish)."""
    while True:
        before = (spy.calls, gateway.in_flight, len(gateway.calls))
        for _ in range(3):
            await spy.inner.queue_stats()
            for _ in range(20):
                await asyncio.sleep(0)
        if (spy.calls, gateway.in_flight, len(gateway.calls)) == before:
            return


async def test_concurrency_is_bounded(store: AsyncStore, gateway: FakeGateway, clock: ManualClock,
                                      events: list[Any]) -> None:
    ids = [(await stand_in(store, f"k{i}")).id for i in range(12)]
    gateway.gate = asyncio.Event()
    spy = CountingStore(store)
    fwd = forwarder(spy, gateway, clock, events, concurrency=3)  # type: ignore[arg-type]
    drain = asyncio.create_task(fwd.drain_once())
    await quiescent(spy, gateway)
    assert gateway.in_flight == 3, "the forwarder must wait for a free slot"
    gateway.gate.set()
    await drain
    assert gateway.max_in_flight == 3
    assert sorted(gateway.authorize_calls()) == sorted(ids)


async def test_a_payment_that_keeps_failing_does_not_block_the_others(
        store: AsyncStore, gateway: FakeGateway, clock: ManualClock, events: list[Any]) -> None:
    stuck = await stand_in(store, "stuck")
    clock.advance(1)
    others = [await stand_in(store, f"k{i}") for i in range(4)]
    gateway.authorize_script[stuck.id] = [GatewayUnavailable(stuck.id, "503", status=503)
                                          for _ in range(10)]
    fwd = forwarder(store, gateway, clock, events, concurrency=1)

    await fwd.drain_once()
    for p in others:
        assert (await state(store, p.id)).forward_state is ForwardState.FORWARDED
    s = await state(store, stuck.id)
    assert (s.forward_state, s.attempts, s.last_error) == (
        ForwardState.QUEUED, 1, "gateway unavailable for " + repr(stuck.id) + ": 503")
    assert s.next_attempt_at == at(1 + 2)  # base 2 s, no jitter

    await fwd.drain_once()  # not due yet: not attempted again
    assert gateway.authorize_calls(stuck.id) == [stuck.id]

    delays = []
    for _ in range(4):  # capped exponential backoff: 4, 8, 10, 10
        due = (await state(store, stuck.id)).next_attempt_at
        assert due is not None
        clock.advance(due.timestamp() - clock.wall())
        before = clock.wall()
        await fwd.drain_once()
        after = await state(store, stuck.id)
        assert after.next_attempt_at is not None
        delays.append(after.next_attempt_at.timestamp() - before)
    assert delays == [4.0, 8.0, 10.0, 10.0]
    assert (await state(store, stuck.id)).attempts == 5
    assert (await store.queue_stats()).count == 1


def test_backoff_jitter_stays_within_bounds() -> None:
    backoff = Backoff(base_s=2.0, cap_s=60.0, jitter=0.5)
    rng = random.Random(7)
    for attempt in range(1, 12):
        full = min(60.0, 2.0 * 2 ** (attempt - 1))
        for _ in range(50):
            assert full / 2 <= backoff.delay(attempt, rng) <= full
    assert backoff.delay(1, rng, retry_after_s=45) >= 45
    assert backoff.delay(1, rng, retry_after_s=10**9) == backoff.max_retry_after_s


async def test_retry_after_holds_the_gateway(store: AsyncStore, gateway: FakeGateway,
                                            clock: ManualClock, events: list[Any]) -> None:
    p = await stand_in(store, "p")
    clock.advance(1)
    q = await stand_in(store, "q")
    gateway.authorize_script[p.id] = [GatewayUnavailable(p.id, "429", retry_after_s=30,
                                                         status=429)]
    fwd = forwarder(store, gateway, clock, events, concurrency=1)

    await fwd.drain_once()
    assert gateway.authorize_calls() == [p.id]
    assert (await state(store, p.id)).next_attempt_at == at(1 + 30)

    clock.advance(29)
    fwd.wake()  # an uplink coming back does not override the gateway's Retry-After
    await fwd.drain_once()
    assert gateway.authorize_calls() == [p.id]

    clock.advance(1.5)
    await fwd.drain_once()
    assert gateway.authorize_calls() == [p.id, p.id, q.id]
    assert (await store.queue_stats()).count == 0


async def test_retry_after_for_one_payment_does_not_hold_the_others(
        store: AsyncStore, gateway: FakeGateway, clock: ManualClock, events: list[Any]) -> None:
    p = await stand_in(store, "p")
    clock.advance(1)
    q = await stand_in(store, "q")
    gateway.authorize_script[p.id] = [GatewayUnavailable(p.id, "409 in progress",
                                                         retry_after_s=20, status=409)]
    fwd = forwarder(store, gateway, clock, events, concurrency=1)
    await fwd.drain_once()
    assert gateway.authorize_calls() == [p.id, q.id]
    assert (await state(store, p.id)).next_attempt_at == at(1 + 20)


async def test_wake_retries_now_instead_of_waiting_out_the_backoff(
        store: AsyncStore, gateway: FakeGateway, clock: ManualClock, events: list[Any]) -> None:
    p = await stand_in(store, "p")
    gateway.authorize_script[p.id] = [GatewayUnavailable(p.id, "no route")]
    fwd = forwarder(store, gateway, clock, events)
    await fwd.drain_once()
    await fwd.drain_once()
    assert gateway.authorize_calls() == [p.id]
    fwd.wake()
    await fwd.drain_once()
    assert gateway.authorize_calls() == [p.id, p.id]
    assert (await state(store, p.id)).forward_state is ForwardState.FORWARDED


async def test_unknown_outcome_is_retried_with_the_identical_body(
        store: AsyncStore, gateway: FakeGateway, clock: ManualClock, events: list[Any]) -> None:
    p = await stand_in(store, "p")
    gateway.authorize_script[p.id] = [UnknownOutcome(p.id, "read timeout")]
    fwd = forwarder(store, gateway, clock, events)
    await fwd.drain_once()
    assert (await state(store, p.id)).forward_state is ForwardState.QUEUED
    clock.advance(60)
    await fwd.drain_once()
    assert gateway.authorize_calls() == [p.id, p.id]
    assert gateway.processed[p.id] == 1  # the second request was a replay, not a 422
    assert (await state(store, p.id)).forward_state is ForwardState.FORWARDED


# --- unknown outcomes: look up first ---------------------------------------------------


async def test_unknown_forward_state_looks_up_first_and_records_what_is_found(
        store: AsyncStore, gateway: FakeGateway, clock: ManualClock, events: list[Any]) -> None:
    p = await stand_in(store, "p", unknown=True)
    gateway.stored[p.id] = GatewayResult("approved", "ONLINE1")  # the lost online answer
    gateway.bodies[p.id] = {"offline": False}
    await forwarder(store, gateway, clock, events).drain_once()
    assert gateway.calls == [("lookup", p.id)]
    done = await state(store, p.id)
    assert (done.forward_state, done.final_status, done.auth_code, done.has_card) == (
        ForwardState.FORWARDED, "approved", "ONLINE1", False)


async def test_unknown_not_found_is_forwarded_after_a_second_look(
        store: AsyncStore, gateway: FakeGateway, clock: ManualClock, events: list[Any]) -> None:
    p = await stand_in(store, "p", unknown=True)
    fwd = forwarder(store, gateway, clock, events)
    await fwd.drain_once()
    assert gateway.calls == [("lookup", p.id)], "one 'not found' proves nothing yet"
    clock.advance(4.9)
    await fwd.drain_once()
    assert gateway.calls == [("lookup", p.id)]
    clock.advance(0.1)
    await fwd.drain_once()
    assert gateway.calls == [("lookup", p.id), ("lookup", p.id), ("authorize", p.id)]
    assert (await state(store, p.id)).forward_state is ForwardState.FORWARDED


async def test_not_found_proves_nothing_while_the_lost_attempt_may_still_arrive(
        store: AsyncStore, gateway: FakeGateway, clock: ManualClock, events: list[Any]) -> None:
    """Found in the outage drill: the forwarder looked up a payment whose online answer
    was lost, got 404 while the original request was still on its way, and sent the
    offline form under the same key. Now the lost attempt's lifetime is waited out."""
    request = PaymentRequest(1000, "KRW", Card(PAN, 12, 2030, cvc="123"), "pos-1", "r")
    begun = await store.begin_online("late", request)
    lost_until = datetime.fromtimestamp(clock.wall() + 63, UTC)
    p = await store.stand_in(begun.id, StandInDecision(True), outcome_unknown=True,
                             lost_attempt_until=lost_until)
    assert p.next_attempt_at == lost_until, "the first lookup is not due at once"
    fwd = forwarder(store, gateway, clock, events)
    fwd.lost_attempt(p.id, 63.0)  # as the service registers it (monotonic)
    fwd.wake()  # an uplink came back: every row due, but not a lookup that proves nothing
    await fwd.drain_once()
    assert gateway.calls == [("lookup", p.id)]
    assert (await state(store, p.id)).next_attempt_at == lost_until
    # the online request arrives at the gateway meanwhile
    gateway.stored[p.id] = GatewayResult("approved", "LATE1")
    gateway.bodies[p.id] = {"offline": False}
    clock.advance(63)
    await fwd.drain_once()
    assert gateway.authorize_calls() == [], "the offline form was never sent"
    got = await state(store, p.id)
    assert (got.forward_state, got.final_status) == (ForwardState.FORWARDED, "approved")


async def test_unknown_stays_unknown_until_a_definite_answer(
        store: AsyncStore, gateway: FakeGateway, clock: ManualClock, events: list[Any]) -> None:
    p = await stand_in(store, "p", unknown=True)
    gateway.lookup_script[p.id] = [GatewayUnavailable(p.id, "down")]
    gateway.authorize_script[p.id] = [GatewayUnavailable(p.id, "down")]
    fwd = forwarder(store, gateway, clock, events)
    await fwd.drain_once()  # lookup fails: nothing else is tried
    assert gateway.calls == [("lookup", p.id)]
    assert (await state(store, p.id)).forward_state is ForwardState.UNKNOWN
    clock.advance(60)
    await fwd.drain_once()  # lookup 404: look again before anything else is sent
    clock.advance(5)
    await fwd.drain_once()  # lookup 404 again, authorize fails: still looked up next time
    assert (await state(store, p.id)).forward_state is ForwardState.UNKNOWN
    clock.advance(60)
    await fwd.drain_once()
    assert [op for op, _ in gateway.calls] == ["lookup", "lookup", "lookup", "authorize",
                                               "lookup", "authorize"]
    assert (await state(store, p.id)).forward_state is ForwardState.FORWARDED
    assert gateway.processed[p.id] == 1


async def test_declined_after_offline_is_counted_and_emitted(
        store: AsyncStore, gateway: FakeGateway, clock: ManualClock, events: list[Any]) -> None:
    p = await stand_in(store, "p", amount=4200)
    gateway.decline.add(p.id)
    unknown = await stand_in(store, "u", unknown=True)
    gateway.stored[unknown.id] = GatewayResult("declined", decline_code="stolen")
    gateway.bodies[unknown.id] = {"offline": False}
    fwd = forwarder(store, gateway, clock, events)
    await fwd.drain_once()
    declined = [f for k, f in events if k == "declined_after_offline"]
    assert sorted(f["payment_id"] for f in declined) == sorted([p.id, unknown.id])
    assert {f["payment_id"]: f["decline_code"] for f in declined} == {
        p.id: "do_not_honor", unknown.id: "stolen"}
    assert fwd.counters.declined_after_offline == 2 and fwd.counters.forwarded == 2
    stats = await store.queue_stats()
    assert stats.by_state["declined_after_offline"] == 2 and stats.count == 0
    done = await state(store, p.id)
    assert (done.status, done.forward_state, done.final_status, done.decline_reason) == (
        PaymentStatus.APPROVED_OFFLINE, ForwardState.FORWARDED, "declined", "do_not_honor")


async def test_declined_offline_with_unknown_outcome_is_never_authorized(
        store: AsyncStore, gateway: FakeGateway, clock: ManualClock, events: list[Any]) -> None:
    charged = await stand_in(store, "charged", approved=False, unknown=True)
    gateway.stored[charged.id] = GatewayResult("approved", "ONLINE2")
    gateway.bodies[charged.id] = {"offline": False}
    clean = await stand_in(store, "clean", approved=False, unknown=True)
    fwd = forwarder(store, gateway, clock, events)
    await fwd.drain_once()
    n = await state(store, clean.id)
    assert n.forward_state is ForwardState.UNKNOWN, "one 'not found' does not close it"
    clock.advance(5)
    await fwd.drain_once()
    assert gateway.authorize_calls() == []
    c = await state(store, charged.id)
    assert (c.status, c.forward_state, c.final_status) == (
        PaymentStatus.DECLINED_OFFLINE, ForwardState.FORWARDED, "approved")
    faults = [f for k, f in events if k == "fault"]
    assert [(f["payment_id"], f["reason"]) for f in faults] == [
        (charged.id, "approved_after_declined_offline")]
    n = await state(store, clean.id)
    assert (n.forward_state, n.final_status) == (ForwardState.NONE, None)


async def test_interrupted_payments_are_resolved_after_their_grace_period(
        tmp_path: Path, gateway: FakeGateway, clock: ManualClock, events: list[Any]) -> None:
    state_dir = tmp_path / "state"
    store = await AsyncStore.open(state_dir, state_dir / "kek.key", wall=clock.wall,
                                  monotonic=clock.monotonic)
    request = PaymentRequest(1000, "KRW", Card(PAN, 12, 2030, cvc="123"))
    found = await store.begin_online("found", request)
    lost = await store.begin_online("lost", request)
    await store.close()  # crash during both online attempts
    gateway.stored[found.id] = GatewayResult("approved", "ONLINE3")
    gateway.bodies[found.id] = {"offline": False}

    store = await AsyncStore.open(state_dir, state_dir / "kek.key", wall=clock.wall,
                                  monotonic=clock.monotonic, pending_grace_s=60,
                                  lost_attempt_s=50)
    try:
        assert sorted(store.report.recovered_pending) == sorted([found.id, lost.id])
        fwd = forwarder(store, gateway, clock, events, lost_attempt_s=50)
        fwd.wake()
        await fwd.drain_once()
        assert gateway.calls == [], "a POS retry gets the grace period first"
        clock.advance(61)
        await fwd.drain_once()
        clock.advance(5)  # the second look that confirms "not found"
        await fwd.drain_once()
        assert gateway.authorize_calls() == []
        f = await state(store, found.id)
        assert (f.status, f.forward_state, f.auth_code, f.has_card) == (
            PaymentStatus.APPROVED, ForwardState.NONE, "ONLINE3", False)
        lo = await state(store, lost.id)
        assert (lo.status, lo.forward_state, lo.decline_reason, lo.has_card) == (
            PaymentStatus.DECLINED_OFFLINE, ForwardState.NONE, "abandoned_after_restart", False)
        assert ("fault", found.id) in [(k, e.get("payment_id")) for k, e in events]
        assert "queue_drained" in kinds(events)
    finally:
        await store.close()


async def test_a_stale_pending_row_is_recovered_by_the_forwarder(
        store: AsyncStore, gateway: FakeGateway, clock: ManualClock, events: list[Any]) -> None:
    request = PaymentRequest(1000, "KRW", Card(PAN, 12, 2030))
    stale = await store.begin_online("stale", request)
    fwd = forwarder(store, gateway, clock, events, stale_pending_after_s=300,
                    recover_every_s=0)
    clock.advance(299)
    await fwd.drain_once()
    assert (await state(store, stale.id)).forward_state is ForwardState.NONE
    clock.advance(2)
    await fwd.drain_once()
    assert (await state(store, stale.id)).interrupted


# --- permanent failures ----------------------------------------------------------------


async def test_a_4xx_makes_the_payment_dead_once_the_gateway_takes_others(
        store: AsyncStore, gateway: FakeGateway, clock: ManualClock, events: list[Any]) -> None:
    p = await stand_in(store, "p")
    clock.advance(1)
    q = await stand_in(store, "q")
    gateway.authorize_script[p.id] = [GatewayRejected(p.id, 400, "bad currency")] * 2
    fwd = forwarder(store, gateway, clock, events)
    await fwd.drain_once()
    assert (await state(store, p.id)).forward_state is ForwardState.QUEUED, \
        "one rejection alone could be the gateway's fault: retried"
    assert (await state(store, q.id)).forward_state is ForwardState.FORWARDED
    clock.advance(10)
    await fwd.drain_once()  # rejected again after the gateway took q: its own fault
    dead = await state(store, p.id)
    assert (dead.forward_state, dead.has_card) == (ForwardState.DEAD, True)
    assert dead.last_error == "gateway rejected with 400: bad currency"
    faults = [f for k, f in events if k == "fault"]
    assert faults == [{"reason": "payment_dead", "payment_id": p.id, "status": 400,
                       "error": "bad currency", "amount": 1000, "currency": "KRW"}]
    assert fwd.counters.dead == 1
    stats = await store.queue_stats()
    assert (stats.count, stats.by_state["dead"]) == (0, 1)
    assert [x.id for x in await store.list_queue()] == [p.id]
    calls = len(gateway.calls)
    clock.advance(3600)
    fwd.wake()
    await fwd.drain_once()
    assert len(gateway.calls) == calls, "a dead payment is never retried automatically"


async def test_a_lone_payment_rejected_again_and_again_is_dead(
        store: AsyncStore, gateway: FakeGateway, clock: ManualClock, events: list[Any]) -> None:
    p = await stand_in(store, "p")
    gateway.authorize_script[p.id] = [GatewayRejected(p.id, 400, "bad currency")] * 3
    fwd = forwarder(store, gateway, clock, events)
    for _ in range(3):
        await fwd.drain_once()
        clock.advance(60)
    assert (await state(store, p.id)).forward_state is ForwardState.DEAD
    assert [f["reason"] for k, f in events if k == "fault"] == ["payment_dead"]


async def test_a_gateway_rejecting_everything_opens_a_breaker_not_dead_payments(
        store: AsyncStore, gateway: FakeGateway, clock: ManualClock, events: list[Any]) -> None:
    """A moved path or a misrouted proxy answers 404 to every authorization: one
    fault, forwarding paused, every payment kept; all forwarded once it is fixed."""
    ids = []
    for i in range(6):
        ids.append((await stand_in(store, f"p{i}")).id)
        clock.advance(1)
    for pid in ids:
        gateway.authorize_script[pid] = [GatewayRejected(pid, 404, "no such path")] * 4
    fwd = forwarder(store, gateway, clock, events)
    for _ in range(4):
        await fwd.drain_once()
        clock.advance(400)
    assert {(await state(store, pid)).forward_state for pid in ids} == {ForwardState.QUEUED}
    assert fwd.counters.dead == 0
    reasons = [f["reason"] for k, f in events if k == "fault"]
    # one fault a minute at most: one per pass here (400 s apart), never one per payment
    assert set(reasons) == {"gateway_rejects_everything"} and len(reasons) <= 4
    for pid in ids:
        gateway.authorize_script[pid] = []  # the path is fixed
    clock.advance(400)
    await fwd.drain_once()
    assert {(await state(store, pid)).forward_state for pid in ids} == {ForwardState.FORWARDED}


async def test_a_422_for_a_payment_the_gateway_already_holds_is_resolved_not_dead(
        store: AsyncStore, gateway: FakeGateway, clock: ManualClock, events: list[Any]) -> None:
    """An online attempt the box believed unprocessed was processed after all."""
    p = await stand_in(store, "p")
    gateway.stored[p.id] = GatewayResult("approved", "ONLINE4")
    gateway.bodies[p.id] = {"offline": False, "cvc": "sent online"}
    await forwarder(store, gateway, clock, events).drain_once()
    assert gateway.calls == [("authorize", p.id), ("lookup", p.id)]
    done = await state(store, p.id)
    assert (done.forward_state, done.auth_code) == (ForwardState.FORWARDED, "ONLINE4")
    assert gateway.processed[p.id] == 0


async def test_a_quarantined_record_is_reported_and_skipped(
        tmp_path: Path, store: AsyncStore, gateway: FakeGateway, clock: ManualClock,
        events: list[Any]) -> None:
    bad = await stand_in(store, "bad")
    clock.advance(1)
    good = await stand_in(store, "good")
    conn = sqlite3.connect(tmp_path / "state" / DB_NAME, isolation_level=None)
    conn.execute("UPDATE payments SET card_blob = substr(card_blob, 1, length(card_blob) - 1) "
                 "|| X'00' WHERE id = ?", (bad.id,))
    conn.close()
    fwd = forwarder(store, gateway, clock, events)
    await fwd.drain_once()
    assert gateway.authorize_calls() == [good.id]
    assert [(k, f["payment_id"], f["reason"]) for k, f in events if k == "fault"] == [
        ("fault", bad.id, "record_quarantined")]
    assert (await state(store, bad.id)).quarantined
    fwd.wake()
    clock.advance(3600)
    await fwd.drain_once()
    assert gateway.authorize_calls() == [good.id]
    assert (await store.queue_stats()).by_state["quarantined"] == 1


# --- exactly once ----------------------------------------------------------------------


async def test_concurrent_drains_and_new_stand_ins_never_forward_twice(
        store: AsyncStore, gateway: FakeGateway, clock: ManualClock, events: list[Any]) -> None:
    first = [(await stand_in(store, f"first-{i}")).id for i in range(15)]
    fwd = forwarder(store, gateway, clock, events, concurrency=3)

    drains: asyncio.Future[Any] = asyncio.gather(fwd.drain_once(), fwd.drain_once(),
                                                 fwd.drain_once())
    started: asyncio.Future[Any] = asyncio.ensure_future(gateway.started.wait())
    await asyncio.wait({started, drains}, return_when=asyncio.FIRST_COMPLETED)
    assert started.done(), "the drains ended without forwarding anything"
    late = []
    for i in range(15):  # new stand-ins while the drains run
        late.append((await stand_in(store, f"late-{i}")).id)
        fwd.wake()
    await drains
    await fwd.drain_once()
    every = first + late
    assert Counter(gateway.authorize_calls()) == Counter({pid: 1 for pid in every})
    for pid in every:
        assert (await state(store, pid)).forward_state is ForwardState.FORWARDED
    assert gateway.max_in_flight <= 3
    assert "fault" not in kinds(events) and fwd.counters.errors == 0
    assert kinds(events).count("queue_drained") >= 1


async def test_a_forward_cancelled_in_flight_is_replayed_not_lost(
        store: AsyncStore, gateway: FakeGateway, clock: ManualClock, events: list[Any]) -> None:
    p = await stand_in(store, "p")
    gateway.gate = asyncio.Event()
    fwd = forwarder(store, gateway, clock, events)
    drain = asyncio.create_task(fwd.drain_once())
    await gateway.started.wait()
    drain.cancel()
    with pytest.raises(asyncio.CancelledError):
        await drain
    assert (await state(store, p.id)).forward_state is ForwardState.QUEUED
    gateway.gate.set()
    await fwd.drain_once()
    assert (await state(store, p.id)).forward_state is ForwardState.FORWARDED
    assert gateway.processed[p.id] == 1


async def test_a_drain_cancelled_before_its_tasks_start_gives_back_every_slot(
        store: AsyncStore, gateway: FakeGateway, clock: ManualClock, events: list[Any]) -> None:
    for i in range(6):
        await stand_in(store, f"k{i}")
    spy = CountingStore(store)
    fetches = 0
    real_fetch = store.due_for_forwarding

    async def fetch_then_cancel(*args: Any, **kwargs: Any) -> list[Payment]:
        nonlocal fetches
        fetches += 1
        if fetches == 2:  # the first batch's tasks exist but have not run yet
            raise asyncio.CancelledError
        return await real_fetch(*args, **kwargs)

    spy.due_for_forwarding = fetch_then_cancel  # type: ignore[attr-defined]
    fwd = forwarder(spy, gateway, clock, events, concurrency=3)  # type: ignore[arg-type]
    with pytest.raises(asyncio.CancelledError):
        await fwd.drain_once()
    assert gateway.calls == []

    spy.due_for_forwarding = real_fetch  # type: ignore[attr-defined]
    gateway.gate = asyncio.Event()
    drain = asyncio.create_task(fwd.drain_once())
    await quiescent(spy, gateway)
    assert gateway.in_flight == 3, "slots were lost to the cancelled drain"
    gateway.gate.set()
    await drain
    assert (await store.queue_stats()).count == 0


async def test_run_drains_on_wake_and_stops_when_cancelled(
        store: AsyncStore, gateway: FakeGateway, clock: ManualClock, events: list[Any]) -> None:
    naps: list[float] = []
    drained = asyncio.Event()

    async def sleep(seconds: float) -> None:
        naps.append(seconds)
        await asyncio.Future()  # only a wake() ends the nap

    def on_event(kind: str, **fields: Any) -> None:
        events.append((kind, fields))
        if kind == "queue_drained":
            drained.set()

    fwd = Forwarder(store, gateway, MERCHANT, ForwarderSettings(idle_poll_s=30),
                    wall=clock.wall, sleep=sleep, rng=NoJitter(), on_event=on_event)
    first = await stand_in(store, "first")
    runner = asyncio.create_task(fwd.run())
    await drained.wait()
    drained.clear()
    assert gateway.authorize_calls() == [first.id]
    second = await stand_in(store, "second")
    fwd.wake()
    await drained.wait()
    assert gateway.authorize_calls() == [first.id, second.id]
    runner.cancel()
    with pytest.raises(asyncio.CancelledError):
        await runner
    assert naps and all(0 < n <= 30 for n in naps)


async def test_run_sleeps_until_the_next_payment_is_due(
        store: AsyncStore, gateway: FakeGateway, clock: ManualClock, events: list[Any]) -> None:
    naps: list[float] = []
    napped = asyncio.Event()

    async def sleep(seconds: float) -> None:
        naps.append(seconds)
        napped.set()
        await asyncio.Future()

    p = await stand_in(store, "p")
    gateway.authorize_script[p.id] = [GatewayUnavailable(p.id, "503", status=503)]
    fwd = Forwarder(store, gateway, MERCHANT,
                    ForwarderSettings(backoff=Backoff(base_s=7.0), idle_poll_s=30),
                    wall=clock.wall, sleep=sleep, rng=NoJitter())
    runner = asyncio.create_task(fwd.run())
    await napped.wait()
    runner.cancel()
    with pytest.raises(asyncio.CancelledError):
        await runner
    assert naps == [7.0]
    assert (await state(store, p.id)).next_attempt_at == at(7)


# --- an unreachable gateway is an uplink problem, not a per-payment one ---------------


async def test_unreachable_gateway_pauses_all_forwarding_without_writes(
        store: AsyncStore, gateway: FakeGateway, clock: ManualClock, events: list[Any]) -> None:
    payments = []
    for i in range(20):
        payments.append(await stand_in(store, f"u{i}"))
        clock.advance(0.01)
    refused = GatewayUnavailable("x", "cannot connect: refused", status=None)
    gateway.authorize_script[payments[0].id] = [refused, refused]  # the oldest is the probe
    fwd = forwarder(store, gateway, clock, events, concurrency=1, unreachable_pause_s=1.0)

    await fwd.drain_once()
    assert len(gateway.authorize_calls()) == 1  # one probe, then the pause holds the rest
    assert [(await state(store, p.id)).attempts for p in payments] == [0] * 20

    clock.advance(0.5)
    await fwd.drain_once()
    assert len(gateway.authorize_calls()) == 1  # still paused
    clock.advance(0.6)
    await fwd.drain_once()
    assert len(gateway.authorize_calls()) == 2  # one more probe; pause doubles to 2 s
    clock.advance(1.5)
    await fwd.drain_once()
    assert len(gateway.authorize_calls()) == 2

    fwd.wake()  # an uplink came back: no need to wait out the pause
    report = await fwd.drain_once()
    assert report.count("forwarded") == 20
    assert sorted(gateway.processed) == sorted(p.id for p in payments)


async def test_refused_credentials_pause_forwarding_and_kill_no_payment(
        store: AsyncStore, gateway: FakeGateway, clock: ManualClock, events: list[Any]) -> None:
    a = await stand_in(store, "cred-a")
    clock.advance(0.01)
    b = await stand_in(store, "cred-b")
    gateway.authorize_script[a.id] = [GatewayRejected(a.id, 401, "bad merchant key")]
    fwd = forwarder(store, gateway, clock, events, concurrency=1)

    await fwd.drain_once()
    assert gateway.authorize_calls() == [a.id]
    assert [(await state(store, p.id)).forward_state for p in (a, b)] == [ForwardState.QUEUED] * 2
    assert ("fault", {"reason": "gateway_credentials_refused", "status": 401,
                      "message": "the gateway refuses the merchant key; forwarding paused"}) \
        in events
    fwd.wake()
    await fwd.drain_once()
    assert sorted(gateway.processed) == sorted([a.id, b.id])
