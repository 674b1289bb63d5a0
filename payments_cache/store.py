"""The durable, encrypted payment store (SQLite): the life of a payment.

Durability and transactions are `payments_cache.database`'s (every change one
transaction, fsync'd; storage errors raise `StorageUnavailable`, nothing half-written);
the keys' life is `payments_cache.key_rotation`'s; rows ↔ `Payment` is `rows`'; what the
queue owes is `queue_stats`'.

Threading: a `Store` owns one `sqlite3` connection that may only be used from the
thread that opened it (SQLite's own check enforces this). `AsyncStore` runs a `Store`
on a one-thread executor so the event loop never blocks.

Life of a payment (`status` is what the POS was told; `forward_state` is the upstream side):

* `begin_online` — PENDING / NONE, card sealed, *before* the online attempt;
* `settle_online` — APPROVED or DECLINED / NONE, card erased;
* `stand_in` — APPROVED_OFFLINE / QUEUED (UNKNOWN if an online attempt was sent and its
  answer lost), or DECLINED_OFFLINE / NONE (UNKNOWN likewise), card erased if declined;
* the forwarder — QUEUED/UNKNOWN → FORWARDED (card erased) or DEAD (card kept for the
  operator), see `forwarder.py`.

Crash recovery — a PENDING row found at open (the process died during an online
attempt, before the POS got any answer) becomes PENDING / UNKNOWN with
``next_attempt_at = now + pending_grace_s``. What a POS retry under the same
Idempotency-Key then gets, through `lookup_idempotency` in the API layer:

* within the grace period the row is still PENDING / UNKNOWN (`Payment.interrupted`),
  with no stored response. The API re-drives it: it repeats the online attempt with
  the identical body (same payment id as Idempotency-Key, ``captured_at=created_at``),
  which the gateway treats as a replay or as the first request, then calls
  `settle_online`, or `stand_in` if the gateway cannot be reached (the forward state
  then stays UNKNOWN whatever the decision says, so the forwarder looks the payment up
  before it forwards anything);
* after the grace period the forwarder resolves it with a lookup: if the gateway has
  it, the row becomes APPROVED / DECLINED (the online result, auth code included), and
  that is the answer the retry gets; if the gateway never received it, the row becomes
  DECLINED_OFFLINE with ``decline_reason="abandoned_after_restart"`` and the card is
  erased. Nobody was charged; the retry gets that decline and the cashier takes the
  payment again under a new key.

A PENDING row whose forward state is NONE is an attempt in progress in this process
(the API should answer 409 to a concurrent duplicate). `recover_stale_pending` treats
one older than a cut-off as interrupted too (e.g. the answer could not be stored).
"""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from collections.abc import Callable, Collection, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from payments_cache.cards import brand as card_brand
from payments_cache.crypto import Kek, KeyRing, RecordBinding, Wrapper, request_hash
from payments_cache.database import (
    DB_NAME,
    Database,
    holds_wrapped_keys,
    open_connection,
    snapshot_before_migrating,
)
from payments_cache.errors import (
    DuplicatePayment,
    InvalidTransition,
    PaymentNotFound,
    PaymentsError,
    RecordQuarantined,
    StorageUnavailable,
)
from payments_cache.key_rotation import KeyRotation, load_key_records
from payments_cache.keysource import (
    KeySource,
    RotatingWrapper,
    erase_file,
    load_legacy_kek,
    open_wrapper,
    protects_at_rest,
    rewrapping,
)
from payments_cache.migrations import (
    MIGRATIONS,
    Migration,
    applied_migrations,
    apply_migrations,
)
from payments_cache.models import (
    ForwardState,
    GatewayResult,
    OfflineDecision,
    OfflineRequest,
    OpenReport,
    Payment,
    PaymentRequest,
    PaymentStatus,
    QueueStats,
    RotationReport,
)
from payments_cache.protection import CardProtection, ForwardCard, ProtectedCard
from payments_cache.queue_stats import read_card_velocity, read_queue_stats, read_queue_totals
from payments_cache.retention import (
    DAY_MS,
    ExpiryReport,
    erase_fingerprints,
    purge_settled,
    retire_hmac_keys,
    settled_totals,
)
from payments_cache.rows import (
    CARD_COLUMNS,
    COLUMNS,
    INSERT,
    INSERT_FIELDS,
    NO_CARD,
    binding_of,
    from_ms,
    new_payment_id,
    payment_from_row,
    sql_value,
    stored_card_of,
    to_ms,
    update_payment,
)
from payments_cache.sealing import SealKey
from payments_cache.upgrade import UPGRADE_NEEDS, upgrade_rows
from payments_cache.wall_frame import WallFrame, current_boot_id, shift_schedule

log = logging.getLogger(__name__)

ABANDONED_REASON = "abandoned_after_restart"
#: No delay the box sets is longer (backoff cap, Retry-After cap, grace, a lost attempt's
#: lifetime): a due time further ahead was set by a wall clock since set back.
MAX_DELAY = timedelta(hours=2)
_MAX_DELAY_MS = int(MAX_DELAY.total_seconds() * 1000)


class Store:
    """The payment store. Open with `Store.open`; use from one thread only."""

    def __init__(self, db: Database, ring: KeyRing, pending_grace_s: float, *,
                 seal_key: SealKey | None = None, merchant_id: str | None = None,
                 lost_attempt_s: float = 120.0) -> None:
        self.db = db
        self._ring = ring
        self._grace_ms = int(pending_grace_s * 1000)
        #: How long after a payment's creation its online attempt may still reach the
        #: gateway (deadline + the gateway's lifetime of a request).
        self._lost_attempt_ms = int(lost_attempt_s * 1000)
        self.protection = CardProtection(ring, seal_key)
        self.keys = KeyRotation(db, ring, self.protection)
        self.merchant_id = merchant_id
        self.report = OpenReport([], [], [], [])

    # open / close

    @classmethod
    def open(cls, directory: str | Path, keys: KeySource, *,
             wall: Callable[[], float] = time.time,
             monotonic: Callable[[], float] = time.monotonic, pending_grace_s: float = 120.0,
             migrations: Sequence[Migration] = MIGRATIONS,
             scrub_interval_s: float = 0.0, seal_key: SealKey | None = None,
             merchant_id: str | None = None, legacy_kek: str | Path | None = None,
             lost_attempt_s: float = 120.0, boot_id: str | None = None) -> Store:
        """Open (creating if needed) the store in `directory`.

        `keys` wraps the database's keys: a KEK file path (the legacy/development form)
        or a factory ``create -> wrapper`` (a key provider). It may create a KEK only
        while the database holds no wrapped key: a missing KEK is never replaced by a
        new one behind the queue's back (`KeyMaterialError`). `legacy_kek`: the KEK
        file of earlier firmware; keys wrapped by it are re-wrapped by `keys` and the
        file is erased. `seal_key`: cards are sealed to the gateway (docs/gateway-protocol.md).
        `wall` stamps the rows; `monotonic` paces the WAL scrub (`scrub_interval_s`);
        with `boot_id` (default: the kernel's) they are the frame in which stored wall
        times are kept when the clock is set (`payments_cache.wall_frame`).

        Raises `KeyMaterialError`, `MigrationFailed` or `StorageUnavailable`. Keys the
        KEK cannot unwrap do not stop it: the payments sealed under them are quarantined
        and listed in `report`.
        """
        moving = legacy_kek is not None and Path(legacy_kek).exists() and (
            not isinstance(keys, str | Path) or Path(keys).resolve() != Path(legacy_kek).resolve())
        wrapper = open_wrapper(keys, create=moving or not holds_wrapped_keys(
            Path(directory) / DB_NAME))
        legacy = load_legacy_kek(legacy_kek, wrapper)
        conn = open_connection(Path(directory))
        try:
            snapshot_before_migrating(conn, Path(directory), migrations)
            applied = apply_migrations(conn, migrations)
            records = load_key_records(conn)
            ring = KeyRing(rewrapping(wrapper, legacy), records,
                           ephemeral_fingerprints=not protects_at_rest(wrapper))
            frame = WallFrame(wall=wall, monotonic=monotonic,
                              boot_id=current_boot_id() if boot_id is None else boot_id)
            db = Database(conn, wall=wall, monotonic=monotonic,
                          scrub_interval_s=scrub_interval_s, frame=frame,
                          on_wall_step=shift_schedule)
            store = cls(db, ring, pending_grace_s, seal_key=seal_key,
                        merchant_id=merchant_id, lost_attempt_s=lost_attempt_s)
            store._start(applied, wrapper, legacy)
        except BaseException:
            conn.close()
            raise
        return store

    def _start(self, applied: list[str], wrapper: Wrapper, legacy: Kek | None) -> None:
        if legacy is not None:
            self.keys.rewrap_keys(wrapper)
        self._ring.use_wrapper(wrapper)
        self.keys.ensure_active_keys()
        released = self.keys.release_recovered_keys()
        quarantined = self.keys.quarantine_unusable_keys()
        upgraded = []
        if UPGRADE_NEEDS in applied_migrations(self.db.conn):
            with self.db.tx("re-protect stored cards") as conn:
                upgraded = upgrade_rows(conn, self.protection, self.db.now_ms())
        recovered = self.recover_stale_pending(None)
        self.report = OpenReport(applied, recovered, sorted(self._ring.unusable), quarantined,
                                 upgraded, released)
        if quarantined or self._ring.unusable:
            log.error("store opened with %d unusable keys; %d payments quarantined",
                      len(self._ring.unusable), len(quarantined))
        self.db.scrub()
        if legacy is not None:
            erase_file(Path(legacy.path))
            log.warning("keys re-wrapped by the key provider; the old KEK file %r is erased",
                        legacy.path)

    @property
    def ring(self) -> KeyRing:
        return self._ring

    def close(self) -> None:
        self.db.close()

    def flush_erasures(self) -> None:
        """Run a WAL scrub that `scrub_interval_s` postponed, if any."""
        self.db.flush_erasures()

    def fingerprint(self, pan: str) -> str:
        return self._ring.fingerprint(pan)

    # POS-side operations

    def lookup_idempotency(self, key: str) -> tuple[Payment, str | None] | None:
        """The payment stored under `key` and its request hash (None: erased, legacy)."""
        with self.db.guard("look up an idempotency key"):
            row = self.db.conn.execute(
                f"SELECT {COLUMNS}, request_hash FROM payments "  # noqa: S608
                "WHERE idempotency_key = ?", (key,)).fetchone()
        return None if row is None else (payment_from_row(row), row["request_hash"])

    def _insert(self, conn: sqlite3.Connection, pid: str, idempotency_key: str,
                request: PaymentRequest, brand: str | None, card: ProtectedCard,
                **fields: Any) -> Payment:
        """Insert one payment; `fields` are the status and forwarding columns."""
        if conn.execute("SELECT 1 FROM payments WHERE idempotency_key = ?",
                        (idempotency_key,)).fetchone():
            raise DuplicatePayment(idempotency_key)
        now = fields.pop("now")
        values: dict[str, Any] = dict(
            id=pid, idempotency_key=idempotency_key, request_hash=request_hash(request),
            created_at=now, updated_at=now, amount=request.amount, currency=request.currency,
            merchant_id=self.merchant_id, terminal_id=request.terminal_id,
            reference=request.reference, brand=brand or card_brand(request.card.pan),
            last4=request.card.last4, card_blob=card.card_blob, key_id=card.key_id,
            card_sealed=card.card_sealed, seal_kid=card.seal_kid, row_mac=card.row_mac,
            next_attempt_at=None, decline_reason=None)
        values.update(fields)
        rows = conn.execute(INSERT, [sql_value(values[f]) for f in INSERT_FIELDS]).fetchall()
        return payment_from_row(rows[0])

    def _binding(self, pid: str, request: PaymentRequest, now: int) -> RecordBinding:
        return RecordBinding(pid, request.amount, request.currency, self.merchant_id,
                             request.terminal_id, now)

    def begin_online(self, idempotency_key: str, request: PaymentRequest, *,
                     brand: str | None = None) -> Payment:
        """Store a PENDING payment with its protected card, before the online attempt."""
        pid = new_payment_id()
        now = self.db.now_ms()
        card = self.protection.protect(self._binding(pid, request, now), request.card)
        with self.db.tx("store the payment") as conn:
            return self._insert(conn, pid, idempotency_key, request, brand, card, now=now,
                                fingerprint=self._ring.fingerprint(request.card.pan),
                                status=PaymentStatus.PENDING, forward_state=ForwardState.NONE)

    def take_offline(self, idempotency_key: str, request: PaymentRequest,
                     decide: Callable[[QueueStats, tuple[int, int]], OfflineDecision],
                     velocity_since: datetime, *, brand: str | None = None) -> Payment:
        """Stand in for a payment that never went online, in one transaction (one fsync).

        `decide(queue_stats, (card_count, card_amount))` runs inside the transaction, so
        the risk limits see exactly the queue this payment joins, even under concurrency.
        An approval is stored APPROVED_OFFLINE / QUEUED with its sealed card; a decline is
        stored DECLINED_OFFLINE without card data.
        """
        (result,) = self.take_offline_many(
            [OfflineRequest(idempotency_key, request, decide, velocity_since, brand)])
        if isinstance(result, BaseException):
            raise result
        return result

    def take_offline_many(self, items: Sequence[OfflineRequest]
                          ) -> list[Payment | PaymentsError]:
        """`take_offline` for several payments in one transaction: one fsync for all
        (group commit). Each is decided in order against the queue the ones before it
        left; one that fails (a duplicate key) is rolled back to its savepoint alone.
        A storage failure fails them all (`StorageUnavailable`): none was stored."""
        results: list[Payment | PaymentsError] = []
        with self.db.tx("store the offline payment") as conn:
            for item in items:
                conn.execute("SAVEPOINT offline_item")
                try:
                    results.append(self._insert_offline(conn, item))
                except DuplicatePayment as exc:
                    conn.execute("ROLLBACK TO offline_item")
                    results.append(exc)
                conn.execute("RELEASE offline_item")
        return results

    def _insert_offline(self, conn: sqlite3.Connection, item: OfflineRequest) -> Payment:
        request = item.request
        pid = new_payment_id()
        now = self.db.now_ms()
        fingerprints = self._ring.fingerprints(request.card.pan)
        decision = item.decide(read_queue_totals(conn),
                               read_card_velocity(conn, fingerprints, item.velocity_since))
        if not decision.approved:
            return self._insert(conn, pid, item.idempotency_key, request, item.brand,
                                ProtectedCard(), now=now,
                                fingerprint=self._ring.fingerprint(request.card.pan),
                                status=PaymentStatus.DECLINED_OFFLINE,
                                forward_state=ForwardState.NONE, decline_reason=decision.reason)
        card = self.protection.protect(self._binding(pid, request, now), request.card)
        return self._insert(conn, pid, item.idempotency_key, request, item.brand, card,
                            now=now, fingerprint=self._ring.fingerprint(request.card.pan),
                            status=PaymentStatus.APPROVED_OFFLINE,
                            forward_state=ForwardState.QUEUED, next_attempt_at=now)

    def settle_online(self, payment_id: str, result: GatewayResult) -> Payment:
        """The gateway answered the online attempt: APPROVED/DECLINED, card erased."""
        with self.db.tx("settle the payment") as conn:
            self._require_pending(conn, payment_id, "settle")
            payment = self._update(conn, payment_id, status=result.status,
                                   forward_state=ForwardState.NONE,
                                   final_status=result.status, auth_code=result.auth_code,
                                   decline_reason=result.decline_code,
                                   next_attempt_at=None, **NO_CARD)
        self.db.scrub()
        return payment

    def stand_in(self, payment_id: str, decision: OfflineDecision, *,
                 outcome_unknown: bool = False,
                 lost_attempt_until: datetime | None = None) -> Payment:
        """The box decided offline: APPROVED_OFFLINE (queued) or DECLINED_OFFLINE.

        `outcome_unknown`: an online attempt was sent and its answer lost, so the
        forwarder must look the payment up before anything else (forward state UNKNOWN,
        also for a decline: the gateway may have approved it). Always so for an
        interrupted payment. `lost_attempt_until`: until when that attempt may still
        reach the gateway; the first lookup is due then, not at once.
        """
        now = self.db.now_ms()
        with self.db.tx("store the offline decision") as conn:
            current = self._require_pending(conn, payment_id, "stand in for")
            unknown = outcome_unknown or current.interrupted
            known = [to_ms(t) for t in (lost_attempt_until, current.lost_attempt_until) if t]
            until = max(known, default=None) if unknown else None
            due = max(now, until or now)
            if decision.approved:
                payment = self._update(
                    conn, payment_id, status=PaymentStatus.APPROVED_OFFLINE,
                    forward_state=ForwardState.UNKNOWN if unknown else ForwardState.QUEUED,
                    next_attempt_at=due, lost_attempt_until=until)
            else:
                payment = self._update(
                    conn, payment_id, status=PaymentStatus.DECLINED_OFFLINE,
                    forward_state=ForwardState.UNKNOWN if unknown else ForwardState.NONE,
                    decline_reason=decision.reason, **NO_CARD,
                    next_attempt_at=due if unknown else None, lost_attempt_until=until)
        if not decision.approved:
            self.db.scrub()
        return payment

    def get(self, payment_id: str) -> Payment | None:
        with self.db.guard("read the payment"):
            return self._get(self.db.conn, payment_id)

    # queue views

    def queue_stats(self) -> QueueStats:
        """Queued = forward state QUEUED or UNKNOWN and not quarantined.

        `by_state` counts every payment by forward state, plus ``quarantined`` and
        ``declined_after_offline`` (approved offline, then declined by the gateway).
        """
        with self.db.guard("read queue statistics"):
            return read_queue_stats(self.db.conn)

    def queue_totals(self) -> QueueStats:
        """Count, amount (also per currency) and oldest of the queue, in O(1); `by_state`
        is left empty."""
        with self.db.guard("read queue totals"):
            return read_queue_totals(self.db.conn)

    def card_velocity(self, pan: str, since: datetime) -> tuple[int, int]:
        """(count, amount) of offline-approved payments on this card since `since`."""
        with self.db.guard("read card velocity"):
            return read_card_velocity(self.db.conn, self._ring.fingerprints(pan), since)

    def list_queue(self, limit: int = 100) -> list[Payment]:
        """Masked rows still owed to the gateway (queued, unknown) or dead; oldest first."""
        with self.db.guard("list the queue"):
            rows = self.db.conn.execute(
                f"SELECT {COLUMNS} FROM payments "  # noqa: S608
                "WHERE forward_state IN ('queued', 'unknown', 'dead') "
                "ORDER BY created_at, id LIMIT ?", (limit,)).fetchall()
        return [payment_from_row(r) for r in rows]

    # forwarder-side operations

    def due_for_forwarding(self, now: datetime, *, limit: int, exclude: Collection[str] = (),
                           ignore_backoff: bool = False) -> list[Payment]:
        """Forwardable payments due at `now`, oldest first.

        `ignore_backoff` makes every row due (an uplink just came back) except interrupted
        PENDING rows, whose grace period is never cut short. A row due further ahead than
        any delay the box ever sets (`MAX_DELAY`) was scheduled by a wall clock that has
        since been set back: it is due now (a clock corrected by hours must not hold the
        queue for hours).
        """
        now_ms = to_ms(now)
        with self.db.guard("read the forwarding queue"):
            rows = self.db.conn.execute(
                f"SELECT {COLUMNS} FROM payments "  # noqa: S608
                "WHERE forward_state IN ('queued', 'unknown') AND quarantined = 0 "
                "AND stuck_at IS NULL "
                "AND (coalesce(next_attempt_at, 0) <= ? OR next_attempt_at > ? "
                "OR (? AND status <> 'pending')) "
                "AND id NOT IN (SELECT value FROM json_each(?)) "
                "ORDER BY created_at, id LIMIT ?",
                (now_ms, now_ms + _MAX_DELAY_MS, ignore_backoff, json.dumps(list(exclude)),
                 limit)).fetchall()
        return [payment_from_row(r) for r in rows]

    def next_due_at(self) -> datetime | None:
        """When the earliest forwardable payment becomes due (None: nothing to forward)."""
        with self.db.guard("read the forwarding queue"):
            (ms,) = self.db.conn.execute(
                "SELECT min(coalesce(next_attempt_at, 0)) FROM payments "
                "WHERE forward_state IN ('queued', 'unknown') AND quarantined = 0 "
                "AND stuck_at IS NULL").fetchone()
        return from_ms(ms)  # a row due beyond MAX_DELAY is taken at the next idle poll

    def card_for_forwarding(self, payment_id: str) -> ForwardCard:
        """The card as the forwarder sends it: opened (no CVC) or sealed as stored. A row
        that fails authentication is quarantined (excluded from forwarding, counted) and
        `RecordQuarantined` is raised."""
        with self.db.guard("read the stored card"):
            row = self.db.conn.execute(  # CAST: a tampered value may not even be a blob
                f"SELECT {CARD_COLUMNS} FROM payments WHERE id = ?",  # noqa: S608
                (payment_id,)).fetchone()
        if row is None:
            raise PaymentNotFound(payment_id)
        if row["card_blob"] is None and row["card_sealed"] is None:
            raise InvalidTransition(payment_id, "forward (card erased)", row["status"],
                                    row["forward_state"])
        try:
            return self.protection.for_forwarding(binding_of(row), stored_card_of(row))
        except RecordQuarantined as exc:
            self._mark_quarantined(payment_id, exc.reason)
            raise

    def _mark_quarantined(self, payment_id: str, reason: str) -> None:
        log.error("payment %s quarantined: %s", payment_id, reason)
        try:
            with self.db.tx("quarantine the payment") as conn:
                self._update(conn, payment_id, quarantined=1, quarantine_reason=reason)
        except StorageUnavailable:
            log.exception("could not persist the quarantine of %s", payment_id)

    def record_forward_result(self, payment_id: str, result: GatewayResult, *,
                              expect: Payment) -> Payment | None:
        """The gateway has the payment with `result`: card erased, outcome kept.

        An interrupted PENDING row takes the result as its online outcome (APPROVED or
        DECLINED); an offline one becomes FORWARDED with `final_status`. Returns None
        (and changes nothing) when the row is no longer in the state `expect` shows.
        """
        fields: dict[str, Any] = dict(
            final_status=result.status, auth_code=result.auth_code, **NO_CARD,
            next_attempt_at=None, last_error=None,
            forward_state=ForwardState.FORWARDED)
        if result.decline_code is not None:
            fields["decline_reason"] = result.decline_code
        if expect.status is PaymentStatus.PENDING:
            fields.update(status=result.status, forward_state=ForwardState.NONE)
        return self._forwarder_update("record the gateway result", expect, fields, erase=True)

    def close_unreceived(self, payment_id: str, *, expect: Payment) -> Payment | None:
        """The gateway never received a payment that must not be forwarded: nothing owed.

        Interrupted PENDING → DECLINED_OFFLINE ``abandoned_after_restart``; DECLINED_OFFLINE
        (unknown outcome) → forward state NONE. Card erased.
        """
        fields: dict[str, Any] = dict(forward_state=ForwardState.NONE, **NO_CARD,
                                      next_attempt_at=None)
        if expect.status is PaymentStatus.PENDING:
            fields.update(status=PaymentStatus.DECLINED_OFFLINE, decline_reason=ABANDONED_REASON)
        elif expect.status is not PaymentStatus.DECLINED_OFFLINE:
            raise InvalidTransition(payment_id, "close as unreceived", expect.status,
                                    expect.forward_state)
        return self._forwarder_update("close the payment", expect, fields, erase=True)

    def schedule_retry(self, payment_id: str, *, expect: Payment, at: datetime, error: str,
                       unknown: bool = False) -> Payment | None:
        """Try again at `at`; `unknown` makes the next attempt look the payment up first."""
        fields: dict[str, Any] = dict(next_attempt_at=to_ms(at), last_error=error)
        if unknown:
            fields["forward_state"] = ForwardState.UNKNOWN
        return self._forwarder_update("schedule a retry", expect, fields)

    def note_error(self, payment_id: str, *, expect: Payment, error: str, retry_at: datetime,
                   stuck: bool = False) -> Payment | None:
        """An attempt failed for a reason other than the network: counted (the first one
        timed), retried at `retry_at` — or, with `stuck`, taken out of the queue until
        an operator requeues it."""
        now = self.db.now_ms()
        fields: dict[str, Any] = dict(
            next_attempt_at=to_ms(retry_at), last_error=error[:500],
            error_attempts=expect.error_attempts + 1,
            first_error_at=to_ms(expect.first_error_at) if expect.first_error_at else now)
        if stuck:
            fields["stuck_at"] = now
        return self._forwarder_update("note a failed attempt", expect, fields)

    def requeue(self, payment_id: str) -> Payment:
        """An operator's word: a stuck (or dead) payment goes back into the queue under
        its own id, due now, its error count reset."""
        with self.db.tx("requeue the payment") as conn:
            current = self._require(conn, payment_id)
            if current.stuck_at is None and current.forward_state is not ForwardState.DEAD:
                raise InvalidTransition(payment_id, "requeue (not stuck or dead)",
                                        current.status, current.forward_state)
            state = (ForwardState.QUEUED if current.forward_state is ForwardState.DEAD
                     else current.forward_state)
            return self._update(conn, payment_id, stuck_at=None, error_attempts=0,
                                first_error_at=None, next_attempt_at=self.db.now_ms(),
                                forward_state=state, last_error="requeued by an operator")

    def list_declined_after_offline(self, limit: int = 100) -> list[Payment]:
        """Approved offline, then declined by the gateway: the shop must collect again."""
        with self.db.guard("list declined payments"):
            rows = self.db.conn.execute(
                f"SELECT {COLUMNS} FROM payments "  # noqa: S608
                "WHERE status = 'approved_offline' AND final_status = 'declined' "
                "ORDER BY created_at DESC, id LIMIT ?", (limit,)).fetchall()
        return [payment_from_row(r) for r in rows]

    def follow_wall(self) -> None:
        """Move the stored schedule with a step of the wall clock, if it was set since
        the last write (`payments_cache.wall_frame`)."""
        self.db.follow_wall()

    def a_payment_the_gateway_holds(self) -> str | None:
        """The id of the latest payment the gateway is known to hold (settled online or
        forwarded), to check that its lookups answer on their path."""
        with self.db.guard("read a settled payment"):
            row = self.db.conn.execute(
                "SELECT id FROM payments WHERE final_status IS NOT NULL "
                "AND (forward_state = 'forwarded' OR status IN ('approved', 'declined')) "
                "ORDER BY created_at DESC LIMIT 1").fetchone()
        return None if row is None else str(row[0])

    def note_not_found(self, payment_id: str, *, expect: Payment, trusted: bool,
                       retry_at: datetime) -> Payment | None:
        """The gateway said "not found" but that is not proof yet: look again at
        `retry_at`. `trusted`: the lost attempt's lifetime is over, so this is the first
        of the two looks that prove it."""
        fields: dict[str, Any] = dict(next_attempt_at=to_ms(retry_at),
                                      last_error="not found at the gateway (yet)")
        if trusted:
            fields["not_found_at"] = self.db.now_ms()
        return self._forwarder_update("note a lookup", expect, fields)

    def mark_dead(self, payment_id: str, *, expect: Payment, error: str) -> Payment | None:
        """Permanently refused: DEAD, reported; the sealed card is kept for the operator."""
        return self._forwarder_update("mark the payment dead", expect, dict(
            forward_state=ForwardState.DEAD, next_attempt_at=None, last_error=error))

    def _forwarder_update(self, operation: str, expect: Payment, fields: dict[str, Any],
                          erase: bool = False) -> Payment | None:
        # not durable: each of these is redone identically if lost (see `_tx`)
        with self.db.tx(operation, durable=False) as conn:
            current = self._get(conn, expect.id)
            if current is None:
                raise PaymentNotFound(expect.id)
            if (current.status, current.forward_state) != (expect.status, expect.forward_state):
                log.warning("payment %s changed under the forwarder (%s/%s), not updated",
                            expect.id, current.status, current.forward_state)
                return None
            payment = self._update(conn, expect.id, attempts=current.attempts + 1, **fields)
        if erase:
            self.db.scrub()
        return payment

    def pending_ids(self) -> list[str]:
        """The PENDING rows: an attempt running, or interrupted."""
        with self.db.guard("read pending payments"):
            rows = self.db.conn.execute("SELECT id FROM payments WHERE status = 'pending' "
                                      "AND forward_state = 'none'").fetchall()
        return [str(r[0]) for r in rows]

    def recover_stale_pending(self, older_than: datetime | None,
                              also: Collection[str] = ()) -> list[str]:
        """PENDING rows with no attempt running (created before `older_than`; None: all;
        and those in `also`, seen pending for long enough by the monotonic clock)
        become interrupted: forward state UNKNOWN, due after the grace period."""
        now = self.db.now_ms()
        cutoff = None if older_than is None else to_ms(older_than)
        with self.db.tx("recover interrupted payments") as conn:
            rows = conn.execute(
                "UPDATE payments SET forward_state = 'unknown', next_attempt_at = ?, "
                "lost_attempt_until = created_at + ?, "
                "last_error = 'interrupted before the POS got an answer', updated_at = ? "
                "WHERE status = 'pending' AND forward_state = 'none' "
                "AND (? IS NULL OR created_at < ? "
                "OR id IN (SELECT value FROM json_each(?))) RETURNING id",
                (now + self._grace_ms, self._lost_attempt_ms, now, cutoff, cutoff,
                 json.dumps(sorted(also)))).fetchall()
        recovered = sorted(r[0] for r in rows)
        if recovered:
            log.warning("%d interrupted payments will be resolved: %s", len(recovered),
                        ", ".join(recovered))
        return recovered

    # keys (`payments_cache.key_rotation`)

    def rotate_keys(self) -> RotationReport:
        """New data and HMAC keys, every kept card re-protected (`KeyRotation.rotate_keys`)."""
        return self.keys.rotate_keys()

    def rotate_kek(self, provider: RotatingWrapper) -> list[str]:
        """A new KEK, every key re-wrapped (`KeyRotation.rotate_kek`); the retired KEK ids."""
        return self.keys.rotate_kek(provider)

    def key_age_s(self) -> float:
        """Age of the active data key (the cryptoperiod clock)."""
        return self.keys.key_age_s()

    # retention

    def expire(self, *, velocity_window_s: float, retention_days: float) -> ExpiryReport:
        """Erase what is no longer needed (`payments_cache.retention`), in one transaction."""
        now = self.db.now_ms()
        window_start = now - int(velocity_window_s * 1000)
        with self.db.tx("erase expired data") as conn:
            erased = erase_fingerprints(conn, window_start)
            retired = retire_hmac_keys(conn, window_start, now)
            purged = purge_settled(conn, now - int(retention_days * DAY_MS))
        for key_id in retired:
            self._ring.forget(key_id)
        if erased or retired or purged:
            self.db.scrub()
        return ExpiryReport(erased, retired, purged)

    def settled_totals(self) -> list[dict[str, object]]:
        with self.db.guard("read the settled totals"):
            return settled_totals(self.db.conn)

    # row access

    def _get(self, conn: sqlite3.Connection, payment_id: str) -> Payment | None:
        row = conn.execute(f"SELECT {COLUMNS} FROM payments WHERE id = ?",  # noqa: S608
                           (payment_id,)).fetchone()
        return None if row is None else payment_from_row(row)

    def _require(self, conn: sqlite3.Connection, payment_id: str) -> Payment:
        payment = self._get(conn, payment_id)
        if payment is None:
            raise PaymentNotFound(payment_id)
        return payment

    def _require_pending(self, conn: sqlite3.Connection, payment_id: str,
                         operation: str) -> Payment:
        payment = self._require(conn, payment_id)
        if payment.status is not PaymentStatus.PENDING:
            raise InvalidTransition(payment_id, operation, payment.status,
                                    payment.forward_state)
        return payment

    def _update(self, conn: sqlite3.Connection, payment_id: str, **fields: Any) -> Payment:
        return update_payment(conn, payment_id, **fields, updated_at=self.db.now_ms())

