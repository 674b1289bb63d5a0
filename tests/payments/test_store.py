"""The encrypted SQLite store: real database files under tmp_path, an injected clock."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import random
import sqlite3
import stat
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from payments_cache.async_store import AsyncStore
from payments_cache.crypto import RecordBinding, load_or_create_kek, request_hash
from payments_cache.database import DB_NAME
from payments_cache.errors import (
    DuplicatePayment,
    InvalidTransition,
    KeyMaterialError,
    MigrationFailed,
    PaymentNotFound,
    RecordQuarantined,
    StorageUnavailable,
)
from payments_cache.migrations import MIGRATIONS, Migration, applied_migrations
from payments_cache.models import (
    Card,
    ForwardState,
    GatewayResult,
    Payment,
    PaymentRequest,
    PaymentStatus,
    QueueStats,
    StandInDecision,
)
from payments_cache.risk import RiskDecision
from payments_cache.store import ABANDONED_REASON, Store
from tests.support.clock import T0, ManualClock

CVC = "8273"
APPROVE = StandInDecision(approved=True)


def luhn_pan(rng: random.Random, prefix: str = "4", length: int = 16) -> str:
    body = prefix + "".join(rng.choice("0123456789") for _ in range(length - len(prefix) - 1))
    total = 0
    for i, ch in enumerate(reversed(body)):
        d = int(ch) * (2 if i % 2 == 0 else 1)
        total += d - 9 if d > 9 else d
    return body + str((10 - total % 10) % 10)


PANS = [luhn_pan(random.Random(i)) for i in range(40)]


def request(i: int = 0, amount: int = 1000, **overrides: object) -> PaymentRequest:
    fields: dict[str, object] = dict(
        amount=amount, currency="KRW", card=Card(PANS[i], 12, 2030, cvc=CVC),
        terminal_id="pos-1", reference=f"order-{i}")
    fields.update(overrides)
    return PaymentRequest(**fields)  # type: ignore[arg-type]


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    return tmp_path / "state"


def open_store(state_dir: Path, clock: ManualClock, **kwargs: object) -> Store:
    return Store.open(state_dir, state_dir / "kek.key", wall=clock.wall,  # type: ignore[arg-type]
                      monotonic=clock.monotonic, **kwargs)


@pytest.fixture
def store(state_dir: Path, clock: ManualClock) -> Iterator[Store]:
    s = open_store(state_dir, clock)
    yield s
    with contextlib.suppress(Exception):
        s.close()


@contextlib.contextmanager
def raw(state_dir: Path) -> Iterator[sqlite3.Connection]:
    """A second connection, for inspection and tampering; closed straight away."""
    conn = sqlite3.connect(state_dir / DB_NAME, isolation_level=None)
    conn.row_factory = sqlite3.Row
    try:
        yield conn
    finally:
        conn.close()


def queued(store: Store, key: str, i: int = 0, amount: int = 1000,
           decision: StandInDecision = APPROVE, unknown: bool = False) -> Payment:
    payment = store.begin_online(key, request(i, amount))
    return store.stand_in(payment.id, decision, outcome_unknown=unknown)


def files_containing(state_dir: Path, needle: bytes) -> list[str]:
    return sorted(p.name for p in state_dir.rglob("*")
                  if p.is_file() and needle in p.read_bytes())


def known_tokens(state_dir: Path) -> list[bytes]:
    """Every hex/base32 token the store writes (HMACs, ids, key ids)."""
    with raw(state_dir) as conn:
        rows = conn.execute("SELECT id, fingerprint, request_hash, key_id FROM payments "
                            "UNION ALL SELECT key_id, NULL, NULL, NULL FROM keys").fetchall()
    return sorted({v.encode() for row in rows for v in row if v}, key=len, reverse=True)


def card_data_hits(state_dir: Path, needle: bytes) -> list[str]:
    """Files holding `needle` once the known tokens are blanked out: a given 4 digits
    occur by chance in a 64-character HMAC about once in a thousand, so they must go."""
    tokens = known_tokens(state_dir)
    hits = []
    for path in (p for p in state_dir.rglob("*") if p.is_file()):
        data = path.read_bytes()
        for token in tokens:
            data = data.replace(token, b"#" * len(token))
        if needle in data:
            hits.append(path.name)
    return hits


def raw_blob(state_dir: Path, payment_id: str) -> bytes | None:
    with raw(state_dir) as conn:
        row = conn.execute("SELECT card_blob FROM payments WHERE id = ?",
                           (payment_id,)).fetchone()
    return None if row["card_blob"] is None else bytes(row["card_blob"])


# --- opening ---------------------------------------------------------------------------


def test_open_sets_durability_pragmas_and_private_files(store: Store, state_dir: Path) -> None:
    conn = store.db.conn
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    assert conn.execute("PRAGMA secure_delete").fetchone()[0] == 1
    assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    queued(store, "k1")
    assert stat.S_IMODE(state_dir.stat().st_mode) == 0o700
    for name in (DB_NAME, DB_NAME + "-wal", DB_NAME + "-shm", "kek.key"):
        assert stat.S_IMODE((state_dir / name).stat().st_mode) == 0o600, name
    with raw(state_dir) as c:
        assert applied_migrations(c) == [m.name for m in MIGRATIONS]
        purposes = sorted(r[0] for r in c.execute("SELECT purpose FROM keys WHERE "
                                                  "state = 'active'"))
    assert purposes == ["data", "hmac"]


def test_open_refuses_an_unsafe_kek_before_touching_the_database(state_dir: Path,
                                                                  clock: ManualClock) -> None:
    state_dir.mkdir()
    (state_dir / "kek.key").write_bytes(os.urandom(32))
    os.chmod(state_dir / "kek.key", 0o644)
    with pytest.raises(KeyMaterialError):
        open_store(state_dir, clock)
    assert not (state_dir / DB_NAME).exists()


def test_a_corrupt_database_file_is_storage_unavailable(state_dir: Path,
                                                        clock: ManualClock) -> None:
    state_dir.mkdir()
    (state_dir / DB_NAME).write_bytes(b"this is not a database" * 100)
    with pytest.raises(StorageUnavailable) as info:
        open_store(state_dir, clock)
    assert "not a database" in info.value.reason


# --- POS-side operations ---------------------------------------------------------------


def test_begin_online_stores_a_pending_payment_with_a_sealed_card(store: Store, clock: ManualClock,
                                                                 state_dir: Path) -> None:
    req = request(1, amount=12500)
    p = store.begin_online("key-1", req)
    assert p.id.startswith("pay_") and len(p.id) == 30
    assert (p.status, p.forward_state) == (PaymentStatus.PENDING, ForwardState.NONE)
    assert (p.amount, p.currency, p.terminal_id, p.reference) == (12500, "KRW", "pos-1",
                                                                  "order-1")
    assert (p.brand, p.last4) == ("visa", PANS[1][-4:])
    with raw(state_dir) as conn:  # first6 is not kept: brand and BIN rules are done with it
        assert conn.execute("SELECT first6 FROM payments").fetchone()[0] is None
    assert p.created_at == clock.now() and p.has_card and p.key_id is not None
    assert p.fingerprint == store.fingerprint(PANS[1]) != PANS[1]
    assert PANS[1] not in repr(p)
    card = store.card_for_forwarding(p.id)
    assert (card.pan, card.exp_month, card.exp_year, card.cvc) == (PANS[1], 12, 2030, None)


def test_lookup_idempotency_returns_the_payment_and_request_hash(store: Store) -> None:
    assert store.lookup_idempotency("nope") is None
    p = store.begin_online("key-1", request(1))
    found = store.lookup_idempotency("key-1")
    assert found is not None
    payment, stored_hash = found
    assert payment == p
    assert stored_hash == request_hash(request(1))
    assert stored_hash != request_hash(request(1, amount=1001))
    assert stored_hash != request_hash(request(2))


def test_same_idempotency_key_is_refused_and_the_first_payment_kept(store: Store,
                                                                   state_dir: Path) -> None:
    first = store.begin_online("key-1", request(1))
    with pytest.raises(DuplicatePayment) as info:
        store.begin_online("key-1", request(2))
    assert info.value.idempotency_key == "key-1"
    assert store.get(first.id) == first
    # the refused transaction was rolled back: the next one commits and is visible
    second = store.begin_online("key-2", request(2))
    with raw(state_dir) as conn:
        assert sorted(r[0] for r in conn.execute("SELECT id FROM payments")) == sorted(
            [first.id, second.id])


@pytest.mark.parametrize(("result", "status"), [
    (GatewayResult("approved", auth_code="A1"), PaymentStatus.APPROVED),
    (GatewayResult("declined", decline_code="insufficient_funds"), PaymentStatus.DECLINED),
])
def test_settle_online_erases_the_card(store: Store, state_dir: Path, result: GatewayResult,
                                      status: PaymentStatus) -> None:
    p = store.begin_online("key-1", request(1))
    blob = raw_blob(state_dir, p.id)
    assert blob is not None
    settled = store.settle_online(p.id, result)
    assert (settled.status, settled.forward_state) == (status, ForwardState.NONE)
    assert settled.final_status == result.status
    assert (settled.auth_code, settled.decline_reason) == (result.auth_code, result.decline_code)
    assert not settled.has_card and settled.key_id is None
    assert raw_blob(state_dir, p.id) is None
    assert files_containing(state_dir, blob[-24:]) == [], "ciphertext left on disk"
    assert settled.last4 == PANS[1][-4:]
    with pytest.raises(InvalidTransition):
        store.settle_online(p.id, result)
    with pytest.raises(InvalidTransition):
        store.card_for_forwarding(p.id)


def test_settle_unknown_payment(store: Store) -> None:
    with pytest.raises(PaymentNotFound):
        store.settle_online("pay_missing", GatewayResult("approved"))


@pytest.mark.parametrize(("decision", "unknown", "status", "forward", "has_card"), [
    (StandInDecision(True), False, PaymentStatus.APPROVED_OFFLINE, ForwardState.QUEUED, True),
    (StandInDecision(True), True, PaymentStatus.APPROVED_OFFLINE, ForwardState.UNKNOWN, True),
    (RiskDecision.decline("amount_over_limit"), False, PaymentStatus.DECLINED_OFFLINE,
     ForwardState.NONE, False),
    (StandInDecision(False, "velocity"), True, PaymentStatus.DECLINED_OFFLINE,
     ForwardState.UNKNOWN, False),
])
def test_stand_in(store: Store, state_dir: Path, clock: ManualClock, decision: StandInDecision,
                  unknown: bool, status: PaymentStatus, forward: ForwardState,
                  has_card: bool) -> None:
    p = store.begin_online("key-1", request(1))
    clock.advance(2)
    decided = store.stand_in(p.id, decision, outcome_unknown=unknown)
    assert (decided.status, decided.forward_state, decided.has_card) == (status, forward,
                                                                        has_card)
    assert (raw_blob(state_dir, p.id) is not None) == has_card
    if not decision.approved:
        assert decided.decline_reason == decision.reason
    if forward in (ForwardState.QUEUED, ForwardState.UNKNOWN):
        assert decided.next_attempt_at == clock.now()
    with pytest.raises(InvalidTransition):
        store.stand_in(p.id, decision)


# --- queue views -----------------------------------------------------------------------


def test_queue_stats_and_list(store: Store, state_dir: Path, clock: ManualClock) -> None:
    assert store.queue_stats().count == 0
    assert store.queue_stats().oldest_created_at is None
    a = queued(store, "a", 1, 100)
    clock.advance(1)
    b = queued(store, "b", 2, 200, unknown=True)
    clock.advance(1)
    c = queued(store, "c", 3, 400)
    d = queued(store, "d", 4, 800)
    clock.advance(1)
    store.record_forward_result(c.id, GatewayResult("declined"), expect=c)
    store.mark_dead(d.id, expect=d, error="400")
    e = queued(store, "e", 5, 1600)
    with raw(state_dir) as conn:
        conn.execute("UPDATE payments SET card_blob = X'00' || card_blob WHERE id = ?", (e.id,))
    with pytest.raises(RecordQuarantined):
        store.card_for_forwarding(e.id)
    settled = store.begin_online("f", request(6, 3200))
    store.settle_online(settled.id, GatewayResult("approved"))
    stats = store.queue_stats()
    # everything still owed: a and b, and e although quarantined (the caps count it)
    assert (stats.count, stats.amount) == (3, 1900)
    assert stats.oldest_created_at == datetime.fromtimestamp(T0, UTC)
    assert stats.by_state == {"none": 1, "unknown": 1, "queued": 2, "forwarded": 1,
                              "dead": 1, "quarantined": 1, "declined_after_offline": 1,
                              "stuck": 0}
    listed = store.list_queue()
    assert [p.id for p in listed] == [a.id, b.id, d.id, e.id]
    assert all(not hasattr(p, "pan") for p in listed)
    assert [p.id for p in store.list_queue(limit=2)] == [a.id, b.id]


def test_card_velocity_counts_offline_approvals_on_that_card_since(store: Store,
                                                                  clock: ManualClock) -> None:
    queued(store, "old", 1, 100)
    clock.advance(60)
    since = clock.now()
    queued(store, "a", 1, 200)
    queued(store, "b", 1, 400)
    queued(store, "other card", 2, 800)
    queued(store, "declined", 1, 1600, StandInDecision(False, "limit"))
    online = store.begin_online("online", request(1, 3200))
    store.settle_online(online.id, GatewayResult("approved"))
    assert store.card_velocity(PANS[1], since) == (2, 600)
    assert store.card_velocity(PANS[1], since - timedelta(minutes=5)) == (
        3, 700)
    assert store.card_velocity(PANS[9], since) == (0, 0)


def test_due_for_forwarding_oldest_first_with_backoff_and_exclusions(store: Store,
                                                                    clock: ManualClock) -> None:
    clock.advance(30)
    late = queued(store, "late", 1)
    clock.step_wall(-20)
    early = queued(store, "early", 2)
    clock.advance(50)
    now = clock.now()
    assert [p.id for p in store.due_for_forwarding(now, limit=10)] == [early.id, late.id]
    assert [p.id for p in store.due_for_forwarding(now, limit=1)] == [early.id]
    assert [p.id for p in store.due_for_forwarding(now, limit=10, exclude=[early.id])] == [
        late.id]
    store.schedule_retry(early.id, expect=early, at=now + timedelta(seconds=10), error="503")
    assert [p.id for p in store.due_for_forwarding(now, limit=10)] == [late.id]
    # (the wall clock was set back 20 s after `late` was stored: its due time moved too)
    late_now = store.get(late.id)
    assert late_now is not None and store.next_due_at() == late_now.next_attempt_at
    assert [p.id for p in store.due_for_forwarding(now, limit=10, ignore_backoff=True)] == [
        early.id, late.id]
    assert [p.id for p in store.due_for_forwarding(now + timedelta(seconds=10), limit=10)] == [
        early.id, late.id]
    retried = store.get(early.id)
    assert retried is not None and (retried.attempts, retried.last_error) == (1, "503")


def test_forwarder_updates_are_compare_and_set(store: Store) -> None:
    p = queued(store, "a", 1)
    assert store.record_forward_result(p.id, GatewayResult("approved", "A1"), expect=p)
    again = store.record_forward_result(p.id, GatewayResult("approved", "A1"), expect=p)
    assert again is None
    assert store.mark_dead(p.id, expect=p, error="late") is None
    final = store.get(p.id)
    assert final is not None
    assert (final.forward_state, final.final_status, final.attempts) == (
        ForwardState.FORWARDED, "approved", 1)


# --- crash recovery --------------------------------------------------------------------


def test_pending_rows_left_by_a_crash_become_interrupted(state_dir: Path,
                                                         clock: ManualClock) -> None:
    s = open_store(state_dir, clock)
    p = s.begin_online("key-1", request(1))
    clock.advance(1)
    done = queued(s, "key-2", 2)
    s.close()  # the process died during the online attempt for key-1

    clock.advance(5)
    s = open_store(state_dir, clock, pending_grace_s=60)
    try:
        assert s.report.recovered_pending == [p.id]
        got = s.get(p.id)
        assert got is not None and got.interrupted
        assert (got.status, got.forward_state) == (PaymentStatus.PENDING, ForwardState.UNKNOWN)
        assert got.has_card
        assert got.next_attempt_at == clock.now() + timedelta(seconds=60)
        assert s.get(done.id) == done
        found = s.lookup_idempotency("key-1")
        assert found is not None and found[1] == request_hash(request(1))
        # the grace period is left to a POS retry; wake-ups do not cut it short
        assert [x.id for x in s.due_for_forwarding(clock.now(), limit=10)] == [done.id]
        assert [x.id for x in s.due_for_forwarding(clock.now(), limit=10,
                                                   ignore_backoff=True)] == [done.id]
        later = clock.now() + timedelta(seconds=61)
        assert [x.id for x in s.due_for_forwarding(later, limit=10)] == [p.id, done.id]
        # a POS retry re-drives it; whatever the decision, the forwarder must look it up
        decided = s.stand_in(p.id, StandInDecision(True))
        assert decided.forward_state is ForwardState.UNKNOWN
    finally:
        s.close()


def test_interrupted_payment_can_be_settled_by_a_retry(state_dir: Path, clock: ManualClock) -> None:
    s = open_store(state_dir, clock)
    p = s.begin_online("key-1", request(1))
    s.close()
    s = open_store(state_dir, clock)
    try:
        settled = s.settle_online(p.id, GatewayResult("approved", "A7"))
        assert (settled.status, settled.forward_state, settled.has_card) == (
            PaymentStatus.APPROVED, ForwardState.NONE, False)
    finally:
        s.close()


def test_interrupted_payment_resolved_by_the_forwarder(store: Store, clock: ManualClock) -> None:
    found = store.begin_online("found", request(1))
    lost = store.begin_online("lost", request(2))
    assert sorted(store.recover_stale_pending(clock.now() + timedelta(seconds=1))) == sorted(
        [found.id, lost.id])
    f, lo = store.get(found.id), store.get(lost.id)
    assert f is not None and lo is not None
    approved = store.record_forward_result(found.id, GatewayResult("approved", "A9"), expect=f)
    assert approved is not None
    assert (approved.status, approved.forward_state, approved.auth_code, approved.has_card) == (
        PaymentStatus.APPROVED, ForwardState.NONE, "A9", False)
    closed = store.close_unreceived(lost.id, expect=lo)
    assert closed is not None
    assert (closed.status, closed.forward_state, closed.decline_reason, closed.has_card) == (
        PaymentStatus.DECLINED_OFFLINE, ForwardState.NONE, ABANDONED_REASON, False)
    assert store.queue_stats().count == 0


def test_recover_stale_pending_spares_recent_attempts(store: Store, clock: ManualClock) -> None:
    old = store.begin_online("old", request(1))
    clock.advance(600)
    recent = store.begin_online("recent", request(2))
    assert store.recover_stale_pending(clock.now() - timedelta(seconds=300)) == [old.id]
    r = store.get(recent.id)
    assert r is not None and r.forward_state is ForwardState.NONE


# --- quarantine ------------------------------------------------------------------------


def test_tampered_ciphertext_is_quarantined_and_the_store_keeps_serving(
        store: Store, state_dir: Path) -> None:
    bad = queued(store, "bad", 1)
    good = queued(store, "good", 2)
    with raw(state_dir) as conn:
        blob = bytearray(conn.execute("SELECT card_blob FROM payments WHERE id = ?",
                                      (bad.id,)).fetchone()[0])
        blob[-1] ^= 0xFF
        conn.execute("UPDATE payments SET card_blob = ? WHERE id = ?", (bytes(blob), bad.id))
    with pytest.raises(RecordQuarantined) as info:
        store.card_for_forwarding(bad.id)
    assert (info.value.payment_id, info.value.field) == (bad.id, "card")
    q = store.get(bad.id)
    assert q is not None and q.quarantined
    assert (q.quarantine_reason or "").startswith("authentication failed")
    assert q.status is PaymentStatus.APPROVED_OFFLINE, "status must not be rewritten"
    assert [p.id for p in store.due_for_forwarding(datetime.now(UTC) + timedelta(days=1),
                                                   limit=10)] == [good.id]
    assert store.queue_stats().by_state["quarantined"] == 1
    assert store.card_for_forwarding(good.id).pan == PANS[2]
    new = queued(store, "new", 3)
    assert store.card_for_forwarding(new.id).pan == PANS[3]


def test_swapping_ciphertexts_between_payments_fails(store: Store, state_dir: Path) -> None:
    a = queued(store, "a", 1)
    b = queued(store, "b", 2)
    blob_a, blob_b = raw_blob(state_dir, a.id), raw_blob(state_dir, b.id)
    assert a.key_id == b.key_id and blob_a != blob_b
    with raw(state_dir) as conn:
        conn.execute("UPDATE payments SET card_blob = ? WHERE id = ?", (blob_b, a.id))
        conn.execute("UPDATE payments SET card_blob = ? WHERE id = ?", (blob_a, b.id))
    for p in (a, b):
        with pytest.raises(RecordQuarantined, match="authentication failed"):
            store.card_for_forwarding(p.id)
    assert store.queue_stats().by_state["quarantined"] == 2


def test_wrong_kek_quarantines_existing_records_and_keeps_serving(
        state_dir: Path, tmp_path: Path, clock: ManualClock) -> None:
    s = open_store(state_dir, clock)
    a = queued(s, "a", 1)
    b = queued(s, "b", 2)
    settled = s.begin_online("c", request(3))
    s.settle_online(settled.id, GatewayResult("approved"))
    s.close()

    load_or_create_kek(tmp_path / "another-kek.key")  # a KEK, but not the one that wrapped
    s = Store.open(state_dir, tmp_path / "another-kek.key", wall=clock.wall,
                   monotonic=clock.monotonic)
    try:
        assert len(s.report.unusable_keys) == 2  # the data key and the HMAC key
        assert s.report.quarantined == sorted([a.id, b.id])
        for p in (a, b):
            got = s.get(p.id)
            assert got is not None and got.quarantined and got.has_card
            with pytest.raises(RecordQuarantined):
                s.card_for_forwarding(p.id)
        assert s.queue_stats().count == 2  # still owed: the caps count them
        assert s.queue_stats().oldest_created_at is None  # but nothing is forwardable
        assert s.queue_stats().by_state["quarantined"] == 2
        new = queued(s, "new", 4)
        assert s.card_for_forwarding(new.id).pan == PANS[4]
        assert s.lookup_idempotency("a") is not None
    finally:
        s.close()
    # the ciphertexts were kept: nothing was destroyed by opening with the wrong KEK
    with raw(state_dir) as conn:
        assert conn.execute("SELECT count(*) FROM payments WHERE card_blob IS NOT NULL "
                            "AND quarantined = 1").fetchone()[0] == 2


# --- no card data on disk --------------------------------------------------------------


def test_no_pan_or_cvc_bytes_anywhere_under_the_state_dir(state_dir: Path,
                                                          clock: ManualClock) -> None:
    used = list(range(1, 9))
    s = open_store(state_dir, clock)
    online = s.begin_online("online", request(1))
    s.settle_online(online.id, GatewayResult("approved", "A1"))
    queued(s, "offline", 2)
    queued(s, "declined", 3, decision=StandInDecision(False, "limit"))
    queued(s, "unknown", 4, unknown=True)
    forwarded = queued(s, "forwarded", 5)
    s.record_forward_result(forwarded.id, GatewayResult("declined", None, "do_not_honor"),
                            expect=forwarded)
    s.begin_online("crashed", request(6))
    s.close()
    s = open_store(state_dir, clock)
    s.rotate_keys()
    queued(s, "after-rotation", 7)
    s.begin_online("pending", request(8))

    def check(when: str) -> None:
        for i in used:
            pan = PANS[i]
            # the PAN, first6 (not kept), and its middle digits
            for needle in (pan, pan[:6], pan[6:-4],
                           pan.encode("utf-16-le").decode("latin-1")):
                assert card_data_hits(state_dir, needle.encode("latin-1")) == [], (when, i)
        assert card_data_hits(state_dir, CVC.encode()) == [], when
        # the scan does read the database: masked data is there in clear
        assert files_containing(state_dir, b"order-2") != [], when

    assert (state_dir / (DB_NAME + "-wal")).exists()
    check("open")
    with raw(state_dir) as conn:  # nor inside the ciphertexts
        sealed = conn.execute("SELECT id, amount, currency, merchant_id, terminal_id, "
                              "created_at, card_blob FROM payments "
                              "WHERE card_blob IS NOT NULL").fetchall()
    assert len(sealed) == 5  # offline, unknown, crashed, after-rotation, pending
    for row in sealed:
        binding = RecordBinding(row["id"], row["amount"], row["currency"], row["merchant_id"],
                                row["terminal_id"], row["created_at"])
        plaintext = s.ring.decrypt(binding, "card", row["card_blob"])
        assert CVC.encode() not in plaintext and b"cvc" not in plaintext
    s.close()
    check("closed")


# --- migrations ------------------------------------------------------------------------


def _delete_then_fail(conn: sqlite3.Connection) -> None:
    conn.execute("ALTER TABLE payments ADD COLUMN doomed TEXT")
    conn.execute("DELETE FROM payments")
    raise RuntimeError("migration bug")


def _silently_delete(conn: sqlite3.Connection) -> None:
    conn.execute("DELETE FROM payments WHERE forward_state = 'queued'")


@pytest.mark.parametrize("broken", [_delete_then_fail, _silently_delete])
def test_a_failing_migration_rolls_back_without_losing_rows(state_dir: Path, clock: ManualClock,
                                                            broken: object) -> None:
    s = open_store(state_dir, clock)
    ids = []
    for i in range(1, 4):
        ids.append(queued(s, f"q{i}", i).id)
        clock.advance(1)
    s.close()
    migration = Migration("0099_broken", broken)  # type: ignore[arg-type]
    with pytest.raises(MigrationFailed) as info:
        open_store(state_dir, clock, migrations=[*MIGRATIONS, migration])
    assert info.value.name == "0099_broken"
    with raw(state_dir) as conn:
        assert conn.execute("SELECT count(*) FROM payments").fetchone()[0] == 3
        assert "0099_broken" not in applied_migrations(conn)
        columns = [r[1] for r in conn.execute("PRAGMA table_info(payments)")]
        assert "doomed" not in columns
    s = open_store(state_dir, clock)
    try:
        assert [p.id for p in s.due_for_forwarding(clock.now(), limit=10)] == ids
    finally:
        s.close()


def test_a_database_from_newer_firmware_is_refused(state_dir: Path, clock: ManualClock) -> None:
    open_store(state_dir, clock).close()
    with raw(state_dir) as conn:
        conn.execute("INSERT INTO migrations (name, applied_at) VALUES ('9999_future', 0)")
    with pytest.raises(MigrationFailed, match="newer firmware"):
        open_store(state_dir, clock)


# --- key rotation ----------------------------------------------------------------------


def _mixed_payments(store: Store) -> list[Payment]:
    q1, q2 = queued(store, "q1", 1), queued(store, "q2", 2)
    unknown = queued(store, "u", 3, unknown=True)
    dead = queued(store, "d", 4)
    store.mark_dead(dead.id, expect=dead, error="400")
    fwd = queued(store, "f", 5)
    store.record_forward_result(fwd.id, GatewayResult("approved", "A5"), expect=fwd)
    retry = queued(store, "r", 6)
    store.schedule_retry(retry.id, expect=retry, at=datetime.fromtimestamp(T0 + 99, UTC),
                         error="503")
    online = store.begin_online("o", request(7))
    store.settle_online(online.id, GatewayResult("declined"))
    pending = store.begin_online("p", request(8))
    return [q1, q2, unknown, dead, fwd, retry, online, pending]


def _state(p: Payment | None) -> tuple[object, ...]:
    assert p is not None
    return (p.status, p.forward_state, p.attempts, p.next_attempt_at, p.final_status,
            p.has_card, p.quarantined, p.fingerprint)


def test_key_rotation_keeps_every_payment_and_forward_state(state_dir: Path, store: Store,
                                                           clock: ManualClock) -> None:
    payments = _mixed_payments(store)
    before = {p.id: _state(store.get(p.id)) for p in payments}
    with_card = [p for p in payments if _state(store.get(p.id))[5]]
    assert len(with_card) == 6  # q1, q2, unknown, dead, retry, pending (not f, not o)
    old_key = with_card[0].key_id
    old_blobs = {p.id: raw_blob(state_dir, p.id) for p in with_card}
    due_before = [p.id for p in store.due_for_forwarding(clock.now(), limit=100)]

    report = store.rotate_keys()

    assert report.reencrypted == len(with_card) and report.retired_keys == [old_key]
    assert report.quarantined == []
    assert {p.id: _state(store.get(p.id)) for p in payments} == before
    assert [p.id for p in store.due_for_forwarding(clock.now(), limit=100)] == due_before
    for p in with_card:
        got = store.get(p.id)
        assert got is not None and got.key_id == report.new_key_id
        assert raw_blob(state_dir, p.id) != old_blobs[p.id]
    for i, key in ((1, "q1"), (2, "q2"), (3, "u"), (4, "d"), (6, "r"), (8, "p")):
        found = store.lookup_idempotency(key)
        assert found is not None and store.card_for_forwarding(found[0].id).pan == PANS[i]
    with raw(state_dir) as conn:
        row = conn.execute("SELECT state, wrapped FROM keys WHERE key_id = ?",
                           (old_key,)).fetchone()
        assert (row["state"], row["wrapped"]) == ("retired", None)
    old_blob = old_blobs[with_card[0].id]
    assert old_blob is not None
    assert files_containing(state_dir, old_blob[-24:]) == []
    assert queued(store, "new", 9).key_id == report.new_key_id
    store.close()
    s = open_store(state_dir, clock)
    try:
        assert s.report.unusable_keys == []
        assert s.card_for_forwarding(with_card[0].id).pan == PANS[1]
    finally:
        s.close()


def test_a_failed_rotation_changes_nothing(state_dir: Path, store: Store) -> None:
    a, b, c = (queued(store, k, i) for k, i in (("a", 1), ("b", 2), ("c", 3)))
    old_key = a.key_id
    with raw(state_dir) as conn:  # fail the re-seal of the second payment
        conn.execute("CREATE TRIGGER power_cut BEFORE UPDATE OF card_blob ON payments "
                     f"WHEN NEW.id = '{b.id}' BEGIN SELECT RAISE(ABORT, 'power cut'); END")
    with pytest.raises(sqlite3.IntegrityError, match="power cut"):
        store.rotate_keys()
    with raw(state_dir) as conn:
        conn.execute("DROP TRIGGER power_cut")
        keys = conn.execute("SELECT key_id, state FROM keys WHERE purpose = 'data'").fetchall()
    assert [(k["key_id"], k["state"]) for k in keys] == [(old_key, "active")]
    for p, i in ((a, 1), (b, 2), (c, 3)):
        got = store.get(p.id)
        assert got is not None and got.key_id == old_key
        assert store.card_for_forwarding(p.id).pan == PANS[i]
    assert queued(store, "d", 4).key_id == old_key
    assert store.rotate_keys().reencrypted == 4


def test_rotation_quarantines_unreadable_records_and_keeps_their_key(
        state_dir: Path, store: Store) -> None:
    bad, good = queued(store, "bad", 1), queued(store, "good", 2)
    with raw(state_dir) as conn:
        conn.execute("UPDATE payments SET card_blob = card_blob || X'00' WHERE id = ?",
                     (bad.id,))
    report = store.rotate_keys()
    assert report.quarantined == [bad.id] and report.retired_keys == []
    got = store.get(bad.id)
    assert got is not None and got.quarantined and got.key_id == bad.key_id
    assert store.card_for_forwarding(good.id).pan == PANS[2]


# --- storage failures ------------------------------------------------------------------


@pytest.fixture
def tiny_fs(tmp_path: Path) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (CI runs as root)")
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,mode=0700", "tmpfs", str(mnt)],
                   check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


def fill(path: Path) -> None:
    """Take every last byte of the file system."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for size in (65536, 4096, 512, 1):
            while True:
                try:
                    os.write(fd, b"\0" * size)
                except OSError as exc:
                    assert exc.errno == errno.ENOSPC
                    break
    finally:
        os.close(fd)


def test_disk_full_is_storage_unavailable_atomic_and_recoverable(tiny_fs: Path,
                                                                 clock: ManualClock) -> None:
    state = tiny_fs / "state"
    s = open_store(state, clock)
    try:
        before = [queued(s, f"before-{i}", i) for i in range(1, 4)]
        fill(tiny_fs / "filler")
        stored: list[Payment] = []
        failure: tuple[str, StorageUnavailable] | None = None
        for i in range(200):
            key = f"full-{i}"
            try:
                stored.append(s.begin_online(key, request(4 + i % 30)))
            except StorageUnavailable as exc:
                failure = (key, exc)
                break
        assert failure is not None, "the disk never filled up"
        key, error = failure
        assert error.operation == "store the payment" and "SQLITE_FULL" in error.reason
        assert s.lookup_idempotency(key) is None, "a failed insert left a row"
        for p in stored:  # every call that returned is really there and intact
            assert s.get(p.id) == p
            assert s.card_for_forwarding(p.id).pan == PANS[4 + int(p.idempotency_key[5:]) % 30]
        for p in stored:  # an update under a full disk either commits or leaves no trace
            try:
                s.stand_in(p.id, APPROVE)
            except StorageUnavailable:
                got = s.get(p.id)
                assert got is not None and (got.status, got.has_card) == (
                    PaymentStatus.PENDING, True)

        (tiny_fs / "filler").unlink()
        again = s.begin_online(key, request(1))
        assert s.stand_in(again.id, APPROVE).forward_state is ForwardState.QUEUED
        for p in before:
            assert s.get(p.id) == p
    finally:
        s.close()
    s = open_store(state, clock)
    try:
        assert s.db.conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert s.lookup_idempotency(key) is not None
        assert s.queue_stats().by_state["queued"] >= len(before) + 1
    finally:
        s.close()


def test_storage_errors_map_to_storage_unavailable(store: Store) -> None:
    with pytest.raises(StorageUnavailable) as info, store.db.guard("read the payment"):
        raise sqlite3.OperationalError("disk I/O error")
    assert (info.value.operation, info.value.reason) == ("read the payment", "disk I/O error")
    with pytest.raises(sqlite3.IntegrityError), store.db.guard("x"):
        raise sqlite3.IntegrityError("constraint")


# --- threading -------------------------------------------------------------------------


async def test_async_store_runs_everything_on_its_own_thread(state_dir: Path,
                                                            clock: ManualClock) -> None:
    s = await AsyncStore.open(state_dir, state_dir / "kek.key", wall=clock.wall,
                              monotonic=clock.monotonic)
    try:
        payments = await asyncio.gather(*(s.begin_online(f"k{i}", request(i))
                                          for i in range(20)))
        decided = await asyncio.gather(*(s.stand_in(p.id, APPROVE) for p in payments))
        assert {p.forward_state for p in decided} == {ForwardState.QUEUED}
        assert (await s.queue_stats()).count == 20
        with pytest.raises(sqlite3.ProgrammingError, match="thread"):
            s._store.get(payments[0].id)  # the loop thread may not touch the connection
        got = await s.get(payments[0].id)
        assert got is not None and got.id == payments[0].id
    finally:
        await s.close()


# --- straight to the stand-in, risk checked inside the transaction -------------------


def test_take_offline_decides_on_the_queue_it_joins(store: Store) -> None:
    seen: list[tuple[int, int, tuple[int, int]]] = []

    def decide(stats: QueueStats, velocity: tuple[int, int]) -> StandInDecision:
        seen.append((stats.count, stats.amount, velocity))
        return StandInDecision(stats.count < 2, None if stats.count < 2 else "queue_count")

    card = Card(PANS[0], 12, 2030, cvc=CVC)
    since = datetime(2000, 1, 1, tzinfo=UTC)
    taken = [store.take_offline(f"off-{i}", PaymentRequest(1000 + i, "KRW", card), decide, since)
             for i in range(3)]
    assert [p.status for p in taken] == [PaymentStatus.APPROVED_OFFLINE] * 2 + [
        PaymentStatus.DECLINED_OFFLINE]
    assert [p.forward_state for p in taken] == [ForwardState.QUEUED] * 2 + [ForwardState.NONE]
    assert seen == [(0, 0, (0, 0)), (1, 1000, (1, 1000)), (2, 2001, (2, 2001))]
    assert [p.has_card for p in taken] == [True, True, False]
    assert taken[2].decline_reason == "queue_count"
    assert store.card_for_forwarding(taken[0].id) == Card(PANS[0], 12, 2030)
    with pytest.raises(DuplicatePayment):
        store.take_offline("off-0", PaymentRequest(1, "KRW", card), decide, since)


def test_queue_totals_follow_every_transition(store: Store, clock: ManualClock,
                                              state_dir: Path) -> None:
    """The trigger-kept totals equal a full scan after every kind of change."""
    def scanned() -> tuple[int, int]:
        with raw(state_dir) as conn:
            count, amount = conn.execute(
                "SELECT count(*), coalesce(sum(amount), 0) FROM payments WHERE forward_state "
                "IN ('queued', 'unknown') AND quarantined = 0").fetchone()
        return count, amount

    a = queued(store, "ta", 1, amount=1000)
    queued(store, "tb", 2, amount=2000, unknown=True)
    c = queued(store, "tc", 3, amount=3000)
    assert (store.queue_stats().count, store.queue_stats().amount) == scanned() == (3, 6000)
    store.record_forward_result(a.id, GatewayResult("approved", "X1"), expect=a)
    store.mark_dead(c.id, expect=c, error="400")
    stats = store.queue_stats()
    assert (stats.count, stats.amount) == scanned() == (1, 2000)
    store.take_offline("td", request(4, 7000), lambda s, v: StandInDecision(True), clock.now())
    store.take_offline("te", request(5, 9000), lambda s, v: StandInDecision(False, "no"),
                       clock.now())
    stats = store.queue_stats()
    assert (stats.count, stats.amount) == scanned() == (2, 9000)



def test_owed_amounts_per_currency_follow_every_transition(store: Store, clock: ManualClock,
                                                           state_dir: Path) -> None:
    """The trigger-kept amount of each currency (migration 0007) equals a full scan of
    what is owed after every kind of change; stuck payments stay owed, as in the total."""
    def scanned() -> dict[str, int]:
        with raw(state_dir) as conn:
            return dict(conn.execute(
                "SELECT currency, sum(amount) FROM payments WHERE forward_state "
                "IN ('queued', 'unknown') GROUP BY currency").fetchall())

    def owed() -> dict[str, int]:
        totals = store.queue_totals()
        assert totals.amount_by_currency == store.queue_stats().amount_by_currency
        assert sum(totals.amount_by_currency.values()) == totals.amount
        return totals.amount_by_currency

    a = queued(store, "ca", 1, amount=1000)
    u = store.take_offline("cu", request(2, 700, currency="USD"), lambda s, v: APPROVE,
                           clock.now())
    queued(store, "cb", 3, amount=2000, unknown=True)
    assert owed() == scanned() == {"KRW": 3000, "USD": 700}
    store.record_forward_result(a.id, GatewayResult("approved", "X1"), expect=a)
    store.mark_dead(u.id, expect=u, error="400")
    assert owed() == scanned() == {"KRW": 2000}
    requeued = store.requeue(u.id)
    stuck = store.note_error(u.id, expect=requeued, error="500", retry_at=clock.now(),
                             stuck=True)
    assert stuck is not None and stuck.stuck_at is not None
    assert owed() == scanned() == {"KRW": 2000, "USD": 700}
    store.take_offline("cd", request(4, 9000, currency="USD"),
                       lambda s, v: StandInDecision(False, "no"), clock.now())
    assert owed() == scanned() == {"KRW": 2000, "USD": 700}


def test_postponed_scrub_leaves_no_ciphertext_once_flushed(state_dir: Path,
                                                           clock: ManualClock) -> None:
    s = open_store(state_dir, clock, scrub_interval_s=3600)
    try:
        first = queued(s, "sc1", 1)
        second = queued(s, "sc2", 2)
        blobs = [raw_blob(state_dir, p.id) for p in (first, second)]
        assert all(blobs)
        s.record_forward_result(first.id, GatewayResult("approved", "A1"), expect=first)
        s.record_forward_result(second.id, GatewayResult("approved", "A2"), expect=second)
        s.flush_erasures()
        for blob in blobs:
            assert blob is not None
            assert files_containing(state_dir, blob[-16:]) == []  # the GCM tag is unique
    finally:
        s.close()


async def test_offline_stand_ins_arriving_together_share_one_commit(tmp_path: Path,
                                                                    clock: ManualClock) -> None:
    store = await AsyncStore.open(tmp_path / "s", tmp_path / "s" / "kek.key", wall=clock.wall,
                                  monotonic=clock.monotonic)
    commits: list[int] = []
    original = store._store.take_offline_many

    def counting(items):  # type: ignore[no-untyped-def]
        commits.append(len(items))
        return original(items)

    store._store.take_offline_many = counting  # type: ignore[method-assign]
    try:
        def decide(stats: QueueStats, velocity: tuple[int, int]) -> StandInDecision:
            return StandInDecision(stats.count < 15, None if stats.count < 15 else "count")

        since = datetime(2000, 1, 1, tzinfo=UTC)
        keys = [f"g{i}" for i in range(20)] + ["g3"]  # one duplicate key among them
        results = await asyncio.gather(*(
            store.take_offline(k, request(i % 40, 1000 + i), decide, since)
            for i, k in enumerate(keys)), return_exceptions=True)
        assert isinstance(results[-1], DuplicatePayment)
        payments = [r for r in results if isinstance(r, Payment)]
        assert len(payments) == 20
        assert [p.status for p in payments].count(PaymentStatus.APPROVED_OFFLINE) == 15
        assert sum(commits) == 21 and len(commits) < 21  # batched
        assert (await store.queue_stats()).count == 15
    finally:
        await store.close()


# --------------------------------------------------------------------------- wall frame


def due(store: Store, payment: Payment) -> datetime:
    row = store.get(payment.id)
    assert row is not None and row.next_attempt_at is not None
    return row.next_attempt_at


def test_a_step_of_the_wall_clock_moves_what_was_stored_before_it_only(
        store: Store, clock: ManualClock) -> None:
    before = queued(store, "before", 1)
    due_before = due(store, before)
    clock.step_wall(-6 * 3600)  # NTP corrects a clock 6 h fast
    after = queued(store, "after", 2)  # the first write after the step follows it
    assert due(store, before) == due_before - timedelta(hours=6)
    assert due(store, after) == after.next_attempt_at  # written in the new frame: untouched
    clock.step_wall(2)  # slewing, not a step
    queued(store, "later", 3)
    assert due(store, before) == due_before - timedelta(hours=6)


def test_a_read_first_follows_the_step_too(store: Store, clock: ManualClock) -> None:
    p = queued(store, "p", 1)
    clock.step_wall(3600)
    store.follow_wall()
    assert due(store, p) == p.next_attempt_at + timedelta(hours=1)


def test_a_step_while_the_daemon_was_down_is_followed_in_the_same_boot_only(
        state_dir: Path, clock: ManualClock) -> None:
    def reopen(boot: str) -> Store:
        return Store.open(state_dir, state_dir / "kek.key", wall=clock.wall,
                          monotonic=clock.monotonic, boot_id=boot)

    s = reopen("boot-a")
    p = queued(s, "p", 1)
    s.close()
    clock.step_wall(-3600)
    s = reopen("boot-a")  # restarted, same boot: the monotonic clock goes on
    try:
        s.follow_wall()
        assert due(s, p) == p.next_attempt_at - timedelta(hours=1)
    finally:
        s.close()
    clock.step_wall(-3600)
    s = reopen("boot-b")  # rebooted: nothing to compare with, nothing moved
    try:
        s.follow_wall()
        assert due(s, p) == p.next_attempt_at - timedelta(hours=1)
    finally:
        s.close()
