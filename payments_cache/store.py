"""The durable, encrypted payment store (SQLite) and its asyncio facade.

Durability: WAL journal with ``synchronous=FULL`` (every commit is fsync'd before the
method returns), ``secure_delete=ON`` (erased card data is overwritten, not just
unlinked), ``foreign_keys=ON``. Every change is one ``BEGIN IMMEDIATE`` transaction;
any SQLite storage error (disk full, I/O error, locked) rolls it back and raises
`StorageUnavailable`, so nothing is ever half-written and the same `Store` works again
once the cause is gone. After card data is erased the WAL is checkpointed and truncated
so no old page image holding a ciphertext stays behind.

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

import base64
import contextlib
import json
import logging
import os
import secrets
import sqlite3
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

from payments_cache.cards import brand as card_brand
from payments_cache.crypto import (
    Kek,
    KeyRecord,
    KeyRing,
    Purpose,
    RecordBinding,
    Wrapper,
    card_plaintext,
    fsync_dir,
    request_hash,
)
from payments_cache.errors import (
    DuplicatePayment,
    InvalidTransition,
    PaymentNotFound,
    PaymentsError,
    RecordQuarantined,
    StorageUnavailable,
)
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
    Card,
    ForwardState,
    GatewayResult,
    PaymentRequest,
    PaymentStatus,
    QueueStats,
)
from payments_cache.protection import (
    CARD_FIELD,
    CardProtection,
    ForwardCard,
    ProtectedCard,
    StoredCard,
)
from payments_cache.retention import (
    DAY_MS,
    ExpiryReport,
    erase_fingerprints,
    purge_settled,
    retire_hmac_keys,
    settled_totals,
)
from payments_cache.sealing import SealKey
from payments_cache.upgrade import UPGRADE_NEEDS, upgrade_rows
from payments_cache.wallclock import CLOCK_FLOOR

log = logging.getLogger(__name__)

DB_NAME = "payments.sqlite3"
#: The column values that erase a payment's card, whichever form it was kept in.
_NO_CARD: dict[str, Any] = dict(card_blob=None, key_id=None, card_sealed=None, seal_kid=None,
                                row_mac=None)
ABANDONED_REASON = "abandoned_after_restart"
UNUSABLE_KEY_REASON = "data key cannot be unwrapped with this KEK"
#: No delay the box sets is longer (backoff cap, Retry-After cap, grace, a lost attempt's
#: lifetime): a due time further ahead was set by a wall clock since set back.
MAX_DELAY = timedelta(hours=2)
_MAX_DELAY_MS = int(MAX_DELAY.total_seconds() * 1000)
_FORWARDABLE = (ForwardState.QUEUED.value, ForwardState.UNKNOWN.value)

_COLUMNS = """id, idempotency_key, created_at, amount, currency, merchant_id, terminal_id,
    reference, brand, last4, fingerprint,
    (card_blob IS NOT NULL OR card_sealed IS NOT NULL) AS has_card, key_id, seal_kid, status,
    forward_state, attempts, next_attempt_at, final_status, auth_code, decline_reason,
    last_error, quarantined, quarantine_reason, lost_attempt_until, not_found_at, stuck_at,
    error_attempts, first_error_at"""

#: Every column `_insert` writes, in order; the rest take their defaults.
_INSERT_FIELDS = ("id", "idempotency_key", "request_hash", "created_at", "updated_at", "amount",
                  "currency", "merchant_id", "terminal_id", "reference", "brand", "last4",
                  "fingerprint", "card_blob", "key_id", "card_sealed", "seal_kid", "row_mac",
                  "status", "forward_state", "next_attempt_at", "decline_reason")
_INSERT = (  # the only interpolations are constant column lists
    f"INSERT INTO payments ({', '.join(_INSERT_FIELDS)}) "  # noqa: S608
    f"VALUES ({', '.join('?' * len(_INSERT_FIELDS))}) RETURNING {_COLUMNS}")

#: The columns a card's binding and stored form are read from.
_CARD_COLUMNS = ("id, amount, currency, merchant_id, terminal_id, created_at, "
                 "CAST(card_blob AS BLOB) AS card_blob, key_id, "
                 "CAST(card_sealed AS BLOB) AS card_sealed, seal_kid, row_mac, status, "
                 "forward_state")


# --- value types -----------------------------------------------------------------------


class OfflineDecision(Protocol):
    """The offline risk rules' verdict (e.g. `risk.RiskDecision`)."""

    @property
    def approved(self) -> bool: ...

    @property
    def reason(self) -> str | None: ...


@dataclass(frozen=True)
class StandInDecision:
    """A plain `OfflineDecision`."""

    approved: bool
    reason: str | None = None          # the decline reason when not approved


@dataclass(frozen=True)
class OfflineRequest:
    """One payment for `Store.take_offline_many`."""

    idempotency_key: str
    request: PaymentRequest
    decide: Callable[[QueueStats, tuple[int, int]], OfflineDecision]
    velocity_since: datetime
    brand: str | None = None


@dataclass(frozen=True)
class Payment:
    """A stored payment as the rest of the box sees it: masked, never the PAN or CVC."""

    id: str
    idempotency_key: str
    created_at: datetime
    amount: int
    currency: str
    merchant_id: str | None
    terminal_id: str | None
    reference: str | None
    brand: str
    last4: str
    fingerprint: str | None        # None once the velocity window has passed
    has_card: bool                 # a card is kept (sealed or encrypted) for forwarding
    key_id: str | None             # the data key of a locally encrypted card
    seal_kid: str | None           # the gateway's seal key of a sealed card
    status: PaymentStatus
    forward_state: ForwardState
    attempts: int
    next_attempt_at: datetime | None
    final_status: str | None
    auth_code: str | None
    decline_reason: str | None
    last_error: str | None
    quarantined: bool
    quarantine_reason: str | None
    #: Until then a lost online attempt may still reach the gateway: "not found" proves
    #: nothing before it.
    lost_attempt_until: datetime | None = None
    #: The first trusted "not found"; a second one at least a moment later confirms it.
    not_found_at: datetime | None = None
    #: Set when forwarding kept failing for reasons other than the network: out of the
    #: queue (and its age rule) until an operator requeues it; still owed, still capped.
    stuck_at: datetime | None = None
    #: Attempts that failed for reasons other than the network, and since when.
    error_attempts: int = 0
    first_error_at: datetime | None = None

    @property
    def interrupted(self) -> bool:
        """The online attempt was cut short (crash, or stale) before the POS got an answer."""
        return self.status is PaymentStatus.PENDING and self.forward_state is ForwardState.UNKNOWN


@dataclass(frozen=True)
class OpenReport:
    """What `Store.open` found and did."""

    applied_migrations: list[str]
    recovered_pending: list[str]       # PENDING rows turned into interrupted ones
    unusable_keys: list[str]           # keys this KEK cannot unwrap
    quarantined: list[str]             # payments quarantined because of those keys
    upgraded: list[str] = field(default_factory=list)  # cards re-protected (upgrade)
    released: list[str] = field(default_factory=list)  # un-quarantined: their key is back


@dataclass(frozen=True)
class RotationReport:
    new_key_id: str
    reencrypted: int
    retired_keys: list[str]
    quarantined: list[str]             # records that failed authentication on the way
    new_hmac_key_id: str | None = None


# --- helpers ---------------------------------------------------------------------------


def new_payment_id() -> str:
    """``pay_`` + 26 lower-case base32 characters (128 random bits)."""
    return "pay_" + base64.b32encode(secrets.token_bytes(16)).decode().rstrip("=").lower()


def to_ms(at: datetime) -> int:
    return int(at.timestamp() * 1000)


def from_ms(ms: int | None) -> datetime | None:
    return None if ms is None else datetime.fromtimestamp(ms / 1000, UTC)


def _payment(row: sqlite3.Row) -> Payment:
    created = from_ms(row["created_at"])
    assert created is not None
    return Payment(
        id=row["id"], idempotency_key=row["idempotency_key"], created_at=created,
        amount=row["amount"], currency=row["currency"], merchant_id=row["merchant_id"],
        terminal_id=row["terminal_id"], reference=row["reference"], brand=row["brand"],
        last4=row["last4"], fingerprint=row["fingerprint"], has_card=bool(row["has_card"]),
        key_id=row["key_id"], seal_kid=row["seal_kid"], status=PaymentStatus(row["status"]),
        forward_state=ForwardState(row["forward_state"]), attempts=row["attempts"],
        next_attempt_at=from_ms(row["next_attempt_at"]), final_status=row["final_status"],
        auth_code=row["auth_code"], decline_reason=row["decline_reason"],
        last_error=row["last_error"], quarantined=bool(row["quarantined"]),
        quarantine_reason=row["quarantine_reason"],
        lost_attempt_until=from_ms(row["lost_attempt_until"]),
        not_found_at=from_ms(row["not_found_at"]), stuck_at=from_ms(row["stuck_at"]),
        error_attempts=row["error_attempts"], first_error_at=from_ms(row["first_error_at"]))


def _binding(row: sqlite3.Row) -> RecordBinding:
    return RecordBinding(row["id"], row["amount"], row["currency"], row["merchant_id"],
                         row["terminal_id"], row["created_at"])


def _stored_card(row: sqlite3.Row) -> StoredCard:
    return StoredCard(row["card_blob"], row["key_id"], row["card_sealed"], row["seal_kid"],
                      row["row_mac"])


def _storage_reason(exc: sqlite3.Error) -> str:
    name = getattr(exc, "sqlite_errorname", None)
    return f"{name}: {exc}" if name else str(exc)


# --- the store -------------------------------------------------------------------------


class Store:
    """The payment store. Open with `Store.open`; use from one thread only."""

    def __init__(self, conn: sqlite3.Connection, ring: KeyRing, clock: Callable[[], float],
                 pending_grace_s: float, *, seal_key: SealKey | None = None,
                 merchant_id: str | None = None, lost_attempt_s: float = 120.0) -> None:
        self._conn = conn
        self._ring = ring
        self._clock = clock
        self._grace_ms = int(pending_grace_s * 1000)
        #: How long after a payment's creation its online attempt may still reach the
        #: gateway (deadline + the gateway's lifetime of a request).
        self._lost_attempt_ms = int(lost_attempt_s * 1000)
        self._scrub_interval_s = 0.0
        self._scrubbed_at = float("-inf")
        self._scrub_pending = False
        self.protection = CardProtection(ring, seal_key)
        self.merchant_id = merchant_id
        self.report = OpenReport([], [], [], [])

    # open / close

    @classmethod
    def open(cls, directory: str | Path, keys: KeySource, *,
             clock: Callable[[], float] = time.time, pending_grace_s: float = 120.0,
             migrations: Sequence[Migration] = MIGRATIONS,
             scrub_interval_s: float = 0.0, seal_key: SealKey | None = None,
             merchant_id: str | None = None, legacy_kek: str | Path | None = None,
             lost_attempt_s: float = 120.0) -> Store:
        """Open (creating if needed) the store in `directory`.

        `keys` wraps the database's keys: a KEK file path (the legacy/development form)
        or a factory ``create -> wrapper`` (a key provider). It may create a KEK only
        while the database holds no wrapped key: a missing KEK is never replaced by a
        new one behind the queue's back (`KeyMaterialError`). `legacy_kek`: the KEK
        file of earlier firmware; keys wrapped by it are re-wrapped by `keys` and the
        file is erased. `seal_key`: cards are sealed to the gateway (CONTRACTS §5a).

        Raises `KeyMaterialError`, `MigrationFailed` or `StorageUnavailable`. Keys the
        KEK cannot unwrap do not stop it: the payments sealed under them are quarantined
        and listed in `report`.
        """
        moving = legacy_kek is not None and Path(legacy_kek).exists() and (
            not isinstance(keys, str | Path) or Path(keys).resolve() != Path(legacy_kek).resolve())
        wrapper = open_wrapper(keys, create=moving or not _holds_wrapped_keys(
            Path(directory) / DB_NAME))
        legacy = load_legacy_kek(legacy_kek, wrapper)
        conn = _connect(_prepare_db_file(Path(directory)))
        try:
            snapshot_before_migrating(conn, Path(directory), migrations)
            applied = apply_migrations(conn, migrations)
            records = _load_key_records(conn)
            ring = KeyRing(rewrapping(wrapper, legacy), records,
                           ephemeral_fingerprints=not protects_at_rest(wrapper))
            store = cls(conn, ring, clock, pending_grace_s, seal_key=seal_key,
                        merchant_id=merchant_id, lost_attempt_s=lost_attempt_s)
            store._scrub_interval_s = scrub_interval_s
            store._start(applied, wrapper, legacy)
        except BaseException:
            conn.close()
            raise
        return store

    def _start(self, applied: list[str], wrapper: Wrapper, legacy: Kek | None) -> None:
        if legacy is not None:
            self._rewrap_keys(wrapper)
        self._ring.use_wrapper(wrapper)
        self._ensure_active_keys()
        released = self._release_recovered_keys()
        quarantined = self._quarantine_unusable_keys()
        upgraded = []
        if UPGRADE_NEEDS in applied_migrations(self._conn):
            with self._tx("re-protect stored cards") as conn:
                upgraded = upgrade_rows(conn, self.protection, self._now_ms())
        recovered = self.recover_stale_pending(None)
        self.report = OpenReport(applied, recovered, sorted(self._ring.unusable), quarantined,
                                 upgraded, released)
        if quarantined or self._ring.unusable:
            log.error("store opened with %d unusable keys; %d payments quarantined",
                      len(self._ring.unusable), len(quarantined))
        self._scrub()
        if legacy is not None:
            erase_file(Path(legacy.path))
            log.warning("keys re-wrapped by the key provider; the old KEK file %r is erased",
                        legacy.path)

    def _rewrap_keys(self, wrapper: Wrapper) -> None:
        records = [r for r in _load_key_records(self._conn)
                   if r.wrapped is not None and self._ring.usable(r.key_id)]
        with self._tx("re-wrap the keys") as conn:
            for record in records:
                new = self._ring.rewrap(record, wrapper)
                conn.execute("UPDATE keys SET wrapped = ? WHERE key_id = ?",
                             (new.wrapped, new.key_id))

    @property
    def ring(self) -> KeyRing:
        return self._ring

    def close(self) -> None:
        with self._guard("close the store"):
            self.flush_erasures()
            self._conn.close()

    # transactions

    @contextlib.contextmanager
    def _guard(self, operation: str) -> Iterator[None]:
        """Map SQLite storage failures to `StorageUnavailable`; programming errors pass."""
        try:
            yield
        except (sqlite3.IntegrityError, sqlite3.ProgrammingError, sqlite3.InterfaceError):
            raise
        except sqlite3.DatabaseError as exc:
            raise StorageUnavailable(operation, _storage_reason(exc)) from exc

    @contextlib.contextmanager
    def _tx(self, operation: str, durable: bool = True) -> Iterator[sqlite3.Connection]:
        """One write transaction: committed (and fsync'd) on exit, rolled back on error.

        ``durable=False`` is for changes whose loss in a power cut is harmless because
        they are redone identically (a forward result: the gateway replays it under the
        same Idempotency-Key): the commit is atomic and survives a crash of the process,
        but is fsync'd with the next durable commit or checkpoint instead of at once.
        """
        with self._guard(operation):
            if not durable:
                self._conn.execute("PRAGMA synchronous = NORMAL")
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                try:
                    yield self._conn
                    self._conn.execute("COMMIT")
                except BaseException:
                    self._rollback()
                    raise
            finally:
                if not durable:
                    self._conn.execute("PRAGMA synchronous = FULL")

    def _rollback(self) -> None:
        if self._conn.in_transaction:
            try:
                self._conn.execute("ROLLBACK")
            except sqlite3.Error:
                log.exception("rollback failed")

    def _scrub(self) -> None:
        """Checkpoint and truncate the WAL so erased ciphertexts leave no old page image.

        With `scrub_interval_s` > 0 this happens at most that often (the forwarder
        erases hundreds of cards a second); `flush_erasures()` finishes a pending one."""
        now = time.monotonic()
        if self._scrub_interval_s and now - self._scrubbed_at < self._scrub_interval_s:
            self._scrub_pending = True
            return
        self._scrubbed_at = now
        self._scrub_pending = False
        try:
            self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        except sqlite3.Error as exc:
            log.warning("WAL checkpoint after erasing card data failed: %s", exc)

    def flush_erasures(self) -> None:
        """Run a scrub that `scrub_interval_s` postponed, if any."""
        if self._scrub_pending:
            self._scrubbed_at = float("-inf")
            self._scrub()

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    # keys

    def _ensure_active_keys(self) -> None:
        current: list[tuple[Purpose, str | None]] = [
            ("data", self._ring.active_data_key_id), ("hmac", self._ring.hmac_key_id)]
        needed = [purpose for purpose, key_id in current if key_id is None]
        if not needed:
            return
        records = [self._ring.generate(p, self._now_ms()) for p in needed]
        try:
            with self._tx("create keys") as conn:
                for record in records:
                    conn.execute("UPDATE keys SET state = 'previous' "
                                 "WHERE purpose = ? AND state = 'active'", (record.purpose,))
                    _insert_key(conn, record)
        except BaseException:
            for record in records:
                self._ring.forget(record.key_id)
            raise
        for record in records:
            self._ring.activate(record)

    def _quarantine_unusable_keys(self) -> list[str]:
        unusable = sorted(self._ring.unusable)
        if not unusable:
            return []
        with self._tx("quarantine payments under unusable keys") as conn:
            rows = conn.execute(
                "UPDATE payments SET quarantined = 1, quarantine_reason = ?, updated_at = ? "
                "WHERE quarantined = 0 AND key_id IN (SELECT value FROM json_each(?)) "
                "RETURNING id", (UNUSABLE_KEY_REASON, self._now_ms(),
                                 json.dumps(unusable))).fetchall()
        return sorted(r[0] for r in rows)

    def _release_recovered_keys(self) -> list[str]:
        """Payments quarantined because their key could not be unwrapped, whose key now
        can (the right KEK is back): back in the queue."""
        with self._tx("release payments whose key is back") as conn:
            rows = conn.execute(
                "SELECT id, key_id FROM payments WHERE quarantined = 1 "
                "AND quarantine_reason = ?", (UNUSABLE_KEY_REASON,)).fetchall()
            released = sorted(r["id"] for r in rows if self._ring.usable(r["key_id"]))
            conn.execute("UPDATE payments SET quarantined = 0, quarantine_reason = NULL, "
                         "updated_at = ? WHERE id IN (SELECT value FROM json_each(?))",
                         (self._now_ms(), json.dumps(released)))
        if released:
            log.warning("%d quarantined payments released: their key is usable again",
                        len(released))
        return released

    # hashing

    def fingerprint(self, pan: str) -> str:
        return self._ring.fingerprint(pan)

    # POS-side operations

    def lookup_idempotency(self, key: str) -> tuple[Payment, str | None] | None:
        """The payment stored under `key` and its request hash (None: erased, legacy)."""
        with self._guard("look up an idempotency key"):
            row = self._conn.execute(
                f"SELECT {_COLUMNS}, request_hash FROM payments "  # noqa: S608
                "WHERE idempotency_key = ?", (key,)).fetchone()
        return None if row is None else (_payment(row), row["request_hash"])

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
        rows = conn.execute(_INSERT, [_sql_value(values[f]) for f in _INSERT_FIELDS]).fetchall()
        return _payment(rows[0])

    def _binding(self, pid: str, request: PaymentRequest, now: int) -> RecordBinding:
        return RecordBinding(pid, request.amount, request.currency, self.merchant_id,
                             request.terminal_id, now)

    def begin_online(self, idempotency_key: str, request: PaymentRequest, *,
                     brand: str | None = None) -> Payment:
        """Store a PENDING payment with its protected card, before the online attempt."""
        pid = new_payment_id()
        now = self._now_ms()
        card = self.protection.protect(self._binding(pid, request, now), request.card)
        with self._tx("store the payment") as conn:
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
        with self._tx("store the offline payment") as conn:
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
        now = self._now_ms()
        decision = item.decide(self._queue_totals(conn),
                               self._card_velocity(conn, request.card.pan, item.velocity_since))
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
        with self._tx("settle the payment") as conn:
            self._require_pending(conn, payment_id, "settle")
            payment = self._update(conn, payment_id, status=result.status,
                                   forward_state=ForwardState.NONE,
                                   final_status=result.status, auth_code=result.auth_code,
                                   decline_reason=result.decline_code,
                                   next_attempt_at=None, **_NO_CARD)
        self._scrub()
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
        now = self._now_ms()
        with self._tx("store the offline decision") as conn:
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
                    decline_reason=decision.reason, **_NO_CARD,
                    next_attempt_at=due if unknown else None, lost_attempt_until=until)
        if not decision.approved:
            self._scrub()
        return payment

    def get(self, payment_id: str) -> Payment | None:
        with self._guard("read the payment"):
            return self._get(self._conn, payment_id)

    # queue views

    def queue_stats(self) -> QueueStats:
        """Queued = forward state QUEUED or UNKNOWN and not quarantined.

        `by_state` counts every payment by forward state, plus ``quarantined`` and
        ``declined_after_offline`` (approved offline, then declined by the gateway).
        """
        with self._guard("read queue statistics"):
            return self._queue_stats(self._conn)

    def queue_totals(self) -> QueueStats:
        """Count, amount and oldest of the queue, in O(1); `by_state` is left empty."""
        with self._guard("read queue totals"):
            return self._queue_totals(self._conn)

    @staticmethod
    def _queue_totals(conn: sqlite3.Connection) -> QueueStats:
        """Count and amount of everything owed to the gateway (quarantined and stuck
        included: the offline caps count them), and the oldest payment still being
        forwarded (the age rule: stuck, quarantined and clock-unset rows do not count)."""
        count, amount = conn.execute("SELECT count, amount FROM queue_totals").fetchone()
        floor = to_ms(CLOCK_FLOOR)
        (oldest,) = conn.execute(  # one index range per state
            "SELECT min(m) FROM (SELECT min(created_at) AS m FROM payments "
            "WHERE forward_state = 'queued' AND quarantined = 0 AND created_at >= ? "
            "AND stuck_at IS NULL UNION ALL SELECT min(created_at) FROM payments "
            "WHERE forward_state = 'unknown' AND quarantined = 0 AND created_at >= ? "
            "AND stuck_at IS NULL)", (floor, floor)).fetchone()
        return QueueStats(count, amount, from_ms(oldest), {})

    @classmethod
    def _queue_stats(cls, conn: sqlite3.Connection) -> QueueStats:
        totals = cls._queue_totals(conn)
        by_state = {s.value: 0 for s in ForwardState}
        by_state.update(conn.execute(
            "SELECT forward_state, count(*) FROM payments GROUP BY forward_state"))
        (by_state["quarantined"], by_state["declined_after_offline"],
         by_state["stuck"]) = conn.execute(
            "SELECT coalesce(sum(quarantined), 0), coalesce(sum(status = "
            "'approved_offline' AND final_status = 'declined'), 0), "
            "coalesce(sum(stuck_at IS NOT NULL AND forward_state IN ('queued', 'unknown')), 0) "
            "FROM payments").fetchone()
        return QueueStats(totals.count, totals.amount, totals.oldest_created_at, by_state)

    def card_velocity(self, pan: str, since: datetime) -> tuple[int, int]:
        """(count, amount) of offline-approved payments on this card since `since`."""
        with self._guard("read card velocity"):
            return self._card_velocity(self._conn, pan, since)

    def _card_velocity(self, conn: sqlite3.Connection, pan: str,
                       since: datetime) -> tuple[int, int]:
        count, amount = conn.execute(
            "SELECT count(*), coalesce(sum(amount), 0) FROM payments "
            "WHERE fingerprint IN (SELECT value FROM json_each(?)) "
            "AND status = 'approved_offline' AND created_at >= ?",
            (json.dumps(self._ring.fingerprints(pan)), to_ms(since))).fetchone()
        return int(count), int(amount)

    def list_queue(self, limit: int = 100) -> list[Payment]:
        """Masked rows still owed to the gateway (queued, unknown) or dead; oldest first."""
        with self._guard("list the queue"):
            rows = self._conn.execute(
                f"SELECT {_COLUMNS} FROM payments "  # noqa: S608
                "WHERE forward_state IN ('queued', 'unknown', 'dead') "
                "ORDER BY created_at, id LIMIT ?", (limit,)).fetchall()
        return [_payment(r) for r in rows]

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
        with self._guard("read the forwarding queue"):
            rows = self._conn.execute(
                f"SELECT {_COLUMNS} FROM payments "  # noqa: S608
                "WHERE forward_state IN ('queued', 'unknown') AND quarantined = 0 "
                "AND stuck_at IS NULL "
                "AND (coalesce(next_attempt_at, 0) <= ? OR next_attempt_at > ? "
                "OR (? AND status <> 'pending')) "
                "AND id NOT IN (SELECT value FROM json_each(?)) "
                "ORDER BY created_at, id LIMIT ?",
                (now_ms, now_ms + _MAX_DELAY_MS, ignore_backoff, json.dumps(list(exclude)),
                 limit)).fetchall()
        return [_payment(r) for r in rows]

    def next_due_at(self) -> datetime | None:
        """When the earliest forwardable payment becomes due (None: nothing to forward)."""
        with self._guard("read the forwarding queue"):
            (ms,) = self._conn.execute(
                "SELECT min(coalesce(next_attempt_at, 0)) FROM payments "
                "WHERE forward_state IN ('queued', 'unknown') AND quarantined = 0 "
                "AND stuck_at IS NULL").fetchone()
        return from_ms(ms)  # a row due beyond MAX_DELAY is taken at the next idle poll

    def card_for_forwarding(self, payment_id: str) -> ForwardCard:
        """The card as the forwarder sends it: opened (no CVC) or sealed as stored. A row
        that fails authentication is quarantined (excluded from forwarding, counted) and
        `RecordQuarantined` is raised."""
        with self._guard("read the stored card"):
            row = self._conn.execute(  # CAST: a tampered value may not even be a blob
                f"SELECT {_CARD_COLUMNS} FROM payments WHERE id = ?",  # noqa: S608
                (payment_id,)).fetchone()
        if row is None:
            raise PaymentNotFound(payment_id)
        if row["card_blob"] is None and row["card_sealed"] is None:
            raise InvalidTransition(payment_id, "forward (card erased)", row["status"],
                                    row["forward_state"])
        try:
            return self.protection.for_forwarding(_binding(row), _stored_card(row))
        except RecordQuarantined as exc:
            self._mark_quarantined(payment_id, exc.reason)
            raise

    def _mark_quarantined(self, payment_id: str, reason: str) -> None:
        log.error("payment %s quarantined: %s", payment_id, reason)
        try:
            with self._tx("quarantine the payment") as conn:
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
            final_status=result.status, auth_code=result.auth_code, **_NO_CARD,
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
        fields: dict[str, Any] = dict(forward_state=ForwardState.NONE, **_NO_CARD,
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
        now = self._now_ms()
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
        with self._tx("requeue the payment") as conn:
            current = self._require(conn, payment_id)
            if current.stuck_at is None and current.forward_state is not ForwardState.DEAD:
                raise InvalidTransition(payment_id, "requeue (not stuck or dead)",
                                        current.status, current.forward_state)
            state = (ForwardState.QUEUED if current.forward_state is ForwardState.DEAD
                     else current.forward_state)
            return self._update(conn, payment_id, stuck_at=None, error_attempts=0,
                                first_error_at=None, next_attempt_at=self._now_ms(),
                                forward_state=state, last_error="requeued by an operator")

    def list_declined_after_offline(self, limit: int = 100) -> list[Payment]:
        """Approved offline, then declined by the gateway: the shop must collect again."""
        with self._guard("list declined payments"):
            rows = self._conn.execute(
                f"SELECT {_COLUMNS} FROM payments "  # noqa: S608
                "WHERE status = 'approved_offline' AND final_status = 'declined' "
                "ORDER BY created_at DESC, id LIMIT ?", (limit,)).fetchall()
        return [_payment(r) for r in rows]

    def shift_schedule(self, step: timedelta) -> int:
        """The wall clock was set by `step`: move every owed payment's due time and
        lost-attempt window by it (they measure elapsed time, not dates)."""
        ms = int(step.total_seconds() * 1000)
        with self._tx("follow a clock step", durable=False) as conn:
            return conn.execute(
                "UPDATE payments SET next_attempt_at = next_attempt_at + ?, "
                "lost_attempt_until = lost_attempt_until + ? "
                "WHERE forward_state IN ('queued', 'unknown')", (ms, ms)).rowcount

    def a_payment_the_gateway_holds(self) -> str | None:
        """The id of the latest payment the gateway is known to hold (settled online or
        forwarded), to check that its lookups answer on their path."""
        with self._guard("read a settled payment"):
            row = self._conn.execute(
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
            fields["not_found_at"] = self._now_ms()
        return self._forwarder_update("note a lookup", expect, fields)

    def mark_dead(self, payment_id: str, *, expect: Payment, error: str) -> Payment | None:
        """Permanently refused: DEAD, reported; the sealed card is kept for the operator."""
        return self._forwarder_update("mark the payment dead", expect, dict(
            forward_state=ForwardState.DEAD, next_attempt_at=None, last_error=error))

    def _forwarder_update(self, operation: str, expect: Payment, fields: dict[str, Any],
                          erase: bool = False) -> Payment | None:
        # not durable: each of these is redone identically if lost (see `_tx`)
        with self._tx(operation, durable=False) as conn:
            current = self._get(conn, expect.id)
            if current is None:
                raise PaymentNotFound(expect.id)
            if (current.status, current.forward_state) != (expect.status, expect.forward_state):
                log.warning("payment %s changed under the forwarder (%s/%s), not updated",
                            expect.id, current.status, current.forward_state)
                return None
            payment = self._update(conn, expect.id, attempts=current.attempts + 1, **fields)
        if erase:
            self._scrub()
        return payment

    def pending_ids(self) -> list[str]:
        """The PENDING rows: an attempt running, or interrupted."""
        with self._guard("read pending payments"):
            rows = self._conn.execute("SELECT id FROM payments WHERE status = 'pending' "
                                      "AND forward_state = 'none'").fetchall()
        return [str(r[0]) for r in rows]

    def recover_stale_pending(self, older_than: datetime | None,
                              also: Collection[str] = ()) -> list[str]:
        """PENDING rows with no attempt running (created before `older_than`; None: all;
        and those in `also`, seen pending for long enough by the monotonic clock)
        become interrupted: forward state UNKNOWN, due after the grace period."""
        now = self._now_ms()
        cutoff = None if older_than is None else to_ms(older_than)
        with self._tx("recover interrupted payments") as conn:
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

    # key rotation

    def rotate_keys(self) -> RotationReport:
        """A new data key and a new HMAC key; every kept card re-encrypted (local form)
        or its row re-MACed (sealed form) under them, and the data keys no longer used
        retired, all in one transaction. Statuses and forward states are untouched; a
        record that fails authentication is quarantined and keeps its old key. The
        previous HMAC key stays while its fingerprints can count (`retire_hmac_keys`)."""
        now = self._now_ms()
        new = [self._ring.generate("data", now), self._ring.generate("hmac", now)]
        try:
            with self._tx("rotate keys") as conn:
                conn.execute("UPDATE keys SET state = 'previous' WHERE state = 'active'")
                for record in new:
                    _insert_key(conn, record)
                count, quarantined = self._reprotect_all(conn, new[0].key_id, new[1].key_id)
                retired = self._retire_unused_keys(conn)
        except BaseException:
            for record in new:
                self._ring.forget(record.key_id)
            raise
        for record in new:
            self._ring.activate(record)
        for key_id in retired:
            self._ring.forget(key_id)
        self._scrub()
        log.info("keys rotated to %s and %s: %d records re-protected, %d keys retired",
                 new[0].key_id, new[1].key_id, count, len(retired))
        return RotationReport(new[0].key_id, count, retired, quarantined, new[1].key_id)

    def _reprotect_all(self, conn: sqlite3.Connection, data_key_id: str,
                       hmac_key_id: str) -> tuple[int, list[str]]:
        count, quarantined = 0, []
        rows = conn.execute(
            f"SELECT {_CARD_COLUMNS} FROM payments WHERE quarantined = 0 "  # noqa: S608
            "AND (card_blob IS NOT NULL OR card_sealed IS NOT NULL)").fetchall()
        for row in rows:
            binding, stored = _binding(row), _stored_card(row)
            try:
                card = self.protection.for_forwarding(binding, stored)
            except RecordQuarantined as exc:
                self._update(conn, binding.payment_id, quarantined=1,
                             quarantine_reason=exc.reason)
                quarantined.append(binding.payment_id)
                continue
            if stored.card_sealed is not None:
                conn.execute("UPDATE payments SET row_mac = ? WHERE id = ?", (
                    self.protection.row_mac(binding, stored.card_sealed, hmac_key_id),
                    binding.payment_id))
            else:
                assert isinstance(card, Card)
                blob = self._ring.encrypt(binding, CARD_FIELD, card_plaintext(card),
                                          data_key_id)
                conn.execute("UPDATE payments SET card_blob = ?, key_id = ? WHERE id = ?",
                             (blob, data_key_id, binding.payment_id))
            count += 1
        return count, quarantined

    def key_age_s(self) -> float:
        """Age of the active data key (the cryptoperiod clock)."""
        with self._guard("read the keys"):
            row = self._conn.execute("SELECT created_at FROM keys "
                                     "WHERE purpose = 'data' AND state = 'active'").fetchone()
        return 0.0 if row is None else max(0.0, (self._now_ms() - row[0]) / 1000)

    def rotate_kek(self, provider: RotatingWrapper) -> list[str]:
        """A new KEK in the provider; every key re-wrapped under it in one transaction,
        then the KEKs nothing is wrapped under any more retired. Returns those ids."""
        live = [r for r in _load_key_records(self._conn) if r.wrapped is not None]
        old = {provider.wrapped_kek_id(r.wrapped) for r in live if r.wrapped is not None}
        new_id = provider.rotate_kek()
        self._rewrap_keys(provider)
        retired = sorted(k for k in old if k is not None and k != new_id)
        for kek_id in retired:
            provider.retire_kek(kek_id)
        log.info("KEK rotated to %s; %d keys re-wrapped; retired %s", new_id, len(live),
                 retired)
        return retired

    def expire(self, *, velocity_window_s: float, retention_days: float) -> ExpiryReport:
        """Erase what is no longer needed (`payments_cache.retention`), in one transaction."""
        now = self._now_ms()
        window_start = now - int(velocity_window_s * 1000)
        with self._tx("erase expired data") as conn:
            erased = erase_fingerprints(conn, window_start)
            retired = retire_hmac_keys(conn, window_start, now)
            purged = purge_settled(conn, now - int(retention_days * DAY_MS))
        for key_id in retired:
            self._ring.forget(key_id)
        if erased or retired or purged:
            self._scrub()
        return ExpiryReport(erased, retired, purged)

    def settled_totals(self) -> list[dict[str, object]]:
        with self._guard("read the settled totals"):
            return settled_totals(self._conn)

    def _retire_unused_keys(self, conn: sqlite3.Connection) -> list[str]:
        rows = conn.execute(
            "UPDATE keys SET state = 'retired', wrapped = NULL, retired_at = ? "
            "WHERE purpose = 'data' AND state = 'previous' AND key_id NOT IN "
            "(SELECT key_id FROM payments WHERE key_id IS NOT NULL) RETURNING key_id",
            (self._now_ms(),)).fetchall()
        return sorted(r[0] for r in rows)

    # row access

    def _get(self, conn: sqlite3.Connection, payment_id: str) -> Payment | None:
        row = conn.execute(f"SELECT {_COLUMNS} FROM payments WHERE id = ?",  # noqa: S608
                           (payment_id,)).fetchone()
        return None if row is None else _payment(row)

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
        fields["updated_at"] = self._now_ms()
        assignments = ", ".join(f"{name} = ?" for name in fields)
        rows = conn.execute(
            f"UPDATE payments SET {assignments} WHERE id = ? RETURNING {_COLUMNS}",  # noqa: S608
            (*(_sql_value(v) for v in fields.values()), payment_id)).fetchall()
        return _payment(rows[0])


def _sql_value(value: Any) -> Any:
    return value.value if isinstance(value, ForwardState | PaymentStatus) else value


# --- opening the database --------------------------------------------------------------


def _prepare_db_file(directory: Path) -> Path:
    """The database file, created 0600 inside a 0700 directory (WAL/SHM inherit 0600)."""
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        path = directory / DB_NAME
        created = not path.exists()
        os.close(os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600))
        os.chmod(path, 0o600)
        if created:
            fsync_dir(directory)
    except OSError as exc:
        raise StorageUnavailable("create the database", str(exc)) from exc
    return path


def _connect(path: Path) -> sqlite3.Connection:
    try:
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=True)
    except sqlite3.Error as exc:
        raise StorageUnavailable("open the database", _storage_reason(exc)) from exc
    conn.row_factory = sqlite3.Row
    try:
        _configure(conn)
    except sqlite3.DatabaseError as exc:
        conn.close()
        raise StorageUnavailable("open the database", _storage_reason(exc)) from exc
    except BaseException:
        conn.close()
        raise
    return conn


def _configure(conn: sqlite3.Connection) -> None:
    conn.execute("PRAGMA busy_timeout = 5000")
    mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
    if mode != "wal":
        raise sqlite3.OperationalError(f"journal_mode is {mode!r}, WAL is required")
    for pragma in ("synchronous = FULL", "secure_delete = ON", "foreign_keys = ON",
                   "trusted_schema = OFF"):
        conn.execute(f"PRAGMA {pragma}")
    checks = {"synchronous": 2, "secure_delete": 1, "foreign_keys": 1}
    for name, expected in checks.items():
        if conn.execute(f"PRAGMA {name}").fetchone()[0] != expected:
            raise sqlite3.OperationalError(f"PRAGMA {name} could not be set")


def snapshot_before_migrating(conn: sqlite3.Connection, directory: Path,
                              migrations: Sequence[Migration]) -> Path | None:
    """Before a database made by earlier firmware is migrated, a copy of it as it was
    (``VACUUM INTO``, 0600): an A/B update that is rolled back restores it, since the
    earlier firmware refuses migrations it does not know. None when nothing is pending
    or the database is new."""
    done = applied_migrations(conn)
    pending = [m.name for m in migrations if m.name not in done]
    if not done or not pending:
        return None
    target = directory / f"{DB_NAME}.before-{pending[0]}"
    if target.exists():
        return target
    partial = target.with_name(target.name + ".partial")
    partial.unlink(missing_ok=True)  # a copy cut short by a crash
    old_umask = os.umask(0o077)  # VACUUM INTO creates the file: 0600 from the start
    try:
        conn.execute("VACUUM INTO ?", (str(partial),))
    finally:
        os.umask(old_umask)
    os.chmod(partial, 0o600)
    os.replace(partial, target)
    fsync_dir(directory)
    log.warning("database snapshot before migrating to %s: %s", pending[-1], target)
    return target


def _holds_wrapped_keys(path: Path) -> bool:
    """Whether the database at `path` (if any) holds a wrapped key; read-only, so a
    KEK problem is found before the database is created or changed."""
    if not path.exists():
        return False
    try:
        conn = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise StorageUnavailable("open the database", _storage_reason(exc)) from exc
    try:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
        return "keys" in tables and conn.execute(
            "SELECT 1 FROM keys WHERE wrapped IS NOT NULL LIMIT 1").fetchone() is not None
    except sqlite3.DatabaseError as exc:
        raise StorageUnavailable("open the database", _storage_reason(exc)) from exc
    finally:
        conn.close()


def _load_key_records(conn: sqlite3.Connection) -> list[KeyRecord]:
    rows = conn.execute("SELECT key_id, purpose, state, wrapped, created_at FROM keys").fetchall()
    return [KeyRecord(r["key_id"], r["purpose"], r["state"], r["wrapped"], r["created_at"])
            for r in rows]


def _insert_key(conn: sqlite3.Connection, record: KeyRecord) -> None:
    conn.execute("INSERT INTO keys (key_id, purpose, state, wrapped, created_at) "
                 "VALUES (?, ?, ?, ?, ?)", (record.key_id, record.purpose, record.state,
                                            record.wrapped, record.created_at))
