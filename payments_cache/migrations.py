"""The store's schema, as an ordered list of recorded migrations.

Each migration is a function applied in a transaction of its own together with the
row that records it in `migrations`; a migration that raises is rolled back entirely
(SQLite DDL is transactional) and `MigrationFailed` is raised. As a second guard, a
migration that would leave fewer rows in any table that held payment data than
before it is rolled back as well: a migration never loses a payment.

Migrations must use `conn.execute` only (never `executescript`, which commits), must
never be edited once released, and are only ever appended to `MIGRATIONS`.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from payments_cache.errors import MigrationFailed

#: Tables whose row counts a migration may never reduce.
GUARDED_TABLES = ("payments", "keys")


@dataclass(frozen=True)
class Migration:
    name: str
    apply: Callable[[sqlite3.Connection], None]


def _m0001_initial(conn: sqlite3.Connection) -> None:
    conn.execute("""
        CREATE TABLE keys (
            key_id      TEXT PRIMARY KEY,
            purpose     TEXT NOT NULL CHECK (purpose IN ('data', 'hmac')),
            state       TEXT NOT NULL CHECK (state IN ('active', 'previous', 'retired')),
            wrapped     BLOB,               -- AES-256-GCM under the KEK; NULL once retired
            created_at  INTEGER NOT NULL,   -- UTC ms
            retired_at  INTEGER
        )""")
    conn.execute("CREATE UNIQUE INDEX keys_one_active ON keys (purpose) "
                  "WHERE state = 'active'")
    conn.execute("""
        CREATE TABLE payments (
            id                TEXT PRIMARY KEY,
            idempotency_key   TEXT NOT NULL UNIQUE,
            request_hash      TEXT NOT NULL,     -- keyed HMAC of the canonical request
            created_at        INTEGER NOT NULL,  -- UTC ms
            updated_at        INTEGER NOT NULL,
            amount            INTEGER NOT NULL CHECK (amount > 0),
            currency          TEXT NOT NULL,
            terminal_id       TEXT,
            reference         TEXT,
            brand             TEXT NOT NULL,
            first6            TEXT NOT NULL,
            last4             TEXT NOT NULL,
            fingerprint       TEXT NOT NULL,     -- keyed HMAC of the PAN
            card_blob         BLOB,              -- sealed PAN + expiry; NULL once erased
            key_id            TEXT REFERENCES keys (key_id),
            status            TEXT NOT NULL CHECK (status IN ('pending', 'approved',
                                  'declined', 'approved_offline', 'declined_offline')),
            forward_state     TEXT NOT NULL CHECK (forward_state IN ('none', 'unknown',
                                  'queued', 'forwarded', 'dead')),
            attempts          INTEGER NOT NULL DEFAULT 0,
            next_attempt_at   INTEGER,           -- UTC ms
            final_status      TEXT CHECK (final_status IN ('approved', 'declined')),
            auth_code         TEXT,
            decline_reason    TEXT,
            last_error        TEXT,
            response_json     TEXT,              -- the answer given to the POS (masked)
            quarantined       INTEGER NOT NULL DEFAULT 0 CHECK (quarantined IN (0, 1)),
            quarantine_reason TEXT,
            CHECK ((card_blob IS NULL) = (key_id IS NULL))
        )""")


def _m0002_queue_indexes(conn: sqlite3.Connection) -> None:
    conn.execute("CREATE INDEX payments_forward_queue ON payments "
                 "(forward_state, quarantined, created_at)")
    conn.execute("CREATE INDEX payments_card_velocity ON payments "
                 "(fingerprint, status, created_at)")
    conn.execute("CREATE INDEX payments_status ON payments (status)")
    conn.execute("CREATE INDEX payments_key ON payments (key_id) WHERE key_id IS NOT NULL")


_QUEUED = "(forward_state IN ('queued', 'unknown') AND quarantined = 0)"


def _m0003_queue_totals(conn: sqlite3.Connection) -> None:
    """Count and amount of the forwarding queue kept by triggers, so the risk rules read
    them in O(1) on every offline payment instead of scanning the queue."""
    conn.execute("""
        CREATE TABLE queue_totals (
            id     INTEGER PRIMARY KEY CHECK (id = 1),
            count  INTEGER NOT NULL,
            amount INTEGER NOT NULL
        )""")
    # the f-strings below interpolate only the constant condition _QUEUED
    conn.execute(f"INSERT INTO queue_totals (id, count, amount) "
                 f"SELECT 1, count(*), coalesce(sum(amount), 0) FROM payments WHERE {_QUEUED}")
    new = _QUEUED.replace("forward_state", "NEW.forward_state").replace(
        "quarantined", "NEW.quarantined")
    old = _QUEUED.replace("forward_state", "OLD.forward_state").replace(
        "quarantined", "OLD.quarantined")
    conn.execute(f"""
        CREATE TRIGGER queue_totals_insert AFTER INSERT ON payments WHEN {new}
        BEGIN UPDATE queue_totals SET count = count + 1, amount = amount + NEW.amount; END""")
    conn.execute(f"""
        CREATE TRIGGER queue_totals_delete AFTER DELETE ON payments WHEN {old}
        BEGIN UPDATE queue_totals SET count = count - 1, amount = amount - OLD.amount; END""")
    conn.execute(f"""
        CREATE TRIGGER queue_totals_update
        AFTER UPDATE OF forward_state, quarantined, amount ON payments
        WHEN {old} OR {new}
        BEGIN
            UPDATE queue_totals SET
                count = count - ({old}) + ({new}),
                amount = amount - (CASE WHEN {old} THEN OLD.amount ELSE 0 END)
                                + (CASE WHEN {new} THEN NEW.amount ELSE 0 END);
        END""")


_PAYMENTS_V4 = """
        CREATE TABLE payments (
            id                TEXT PRIMARY KEY,
            idempotency_key   TEXT NOT NULL UNIQUE,
            request_hash      TEXT,              -- hash of the request without the PAN's
                                                 -- middle digits; NULL: erased (legacy)
            created_at        INTEGER NOT NULL,  -- UTC ms
            updated_at        INTEGER NOT NULL,
            amount            INTEGER NOT NULL CHECK (amount > 0),
            currency          TEXT NOT NULL,
            merchant_id       TEXT,              -- the merchant the payment was taken for
            terminal_id       TEXT,
            reference         TEXT,
            brand             TEXT NOT NULL,
            first6            TEXT,              -- never kept since 0004 (NULL)
            last4             TEXT NOT NULL,
            fingerprint       TEXT,              -- keyed HMAC of the PAN, erased after the
                                                 -- velocity window
            card_blob         BLOB,              -- locally encrypted PAN + expiry
            key_id            TEXT REFERENCES keys (key_id),
            card_sealed       BLOB,              -- HPKE-sealed to the gateway (CONTRACTS 5a)
            seal_kid          TEXT,
            row_mac           TEXT,              -- binds a sealed card to its row's fields
            status            TEXT NOT NULL CHECK (status IN ('pending', 'approved',
                                  'declined', 'approved_offline', 'declined_offline')),
            forward_state     TEXT NOT NULL CHECK (forward_state IN ('none', 'unknown',
                                  'queued', 'forwarded', 'dead')),
            attempts          INTEGER NOT NULL DEFAULT 0,
            next_attempt_at   INTEGER,           -- UTC ms
            final_status      TEXT CHECK (final_status IN ('approved', 'declined')),
            auth_code         TEXT,
            decline_reason    TEXT,
            last_error        TEXT,
            quarantined       INTEGER NOT NULL DEFAULT 0 CHECK (quarantined IN (0, 1)),
            quarantine_reason TEXT,
            CHECK ((card_blob IS NULL) = (key_id IS NULL)),
            CHECK ((card_sealed IS NULL) = (seal_kid IS NULL)),
            CHECK (card_blob IS NULL OR card_sealed IS NULL)
        )"""

_V3_COLUMNS = ("id, idempotency_key, request_hash, created_at, updated_at, amount, currency, "
               "terminal_id, reference, brand, first6, last4, fingerprint, card_blob, key_id, "
               "status, forward_state, attempts, next_attempt_at, final_status, auth_code, "
               "decline_reason, last_error, quarantined, quarantine_reason")


def _m0004_card_protection(conn: sqlite3.Connection) -> None:
    """Room for sealed cards and nothing to correlate (SQLite's table-rebuild procedure).

    New: `card_sealed`/`seal_kid` (HPKE to the gateway), `row_mac`, `merchant_id`;
    `first6`, `fingerprint` and `request_hash` become nullable so they can be erased;
    the unused `response_json` goes. `settled_totals` keeps the reconciliation totals of
    rows purged after the retention period. Existing rows are copied as they are; the
    store re-encrypts or re-seals their cards and erases first6 when it opens
    (`payments_cache.upgrade`).
    """
    conn.execute("ALTER TABLE payments RENAME TO payments_v3")
    conn.execute(_PAYMENTS_V4)
    conn.execute(f"INSERT INTO payments ({_V3_COLUMNS}) "
                 f"SELECT {_V3_COLUMNS} FROM payments_v3")
    conn.execute("DROP TABLE payments_v3")  # drops its indexes and triggers with it
    _m0002_queue_indexes(conn)
    conn.execute("CREATE INDEX payments_sealed ON payments (seal_kid) "
                 "WHERE seal_kid IS NOT NULL")
    conn.execute("DROP TABLE queue_totals")
    _m0003_queue_totals(conn)
    conn.execute("""
        CREATE TABLE settled_totals (
            day           TEXT NOT NULL,     -- UTC date the payments were taken
            currency      TEXT NOT NULL,
            status        TEXT NOT NULL,     -- what the POS was told
            final_status  TEXT NOT NULL,     -- the gateway's word, '' when none
            count         INTEGER NOT NULL,
            amount        INTEGER NOT NULL,
            PRIMARY KEY (day, currency, status, final_status)
        )""")


def _m0005_lost_attempts(conn: sqlite3.Connection) -> None:
    """When a "not found" from the gateway can prove that a lost attempt never arrived.

    `lost_attempt_until`: until then an online attempt whose answer was lost may still
    reach the gateway (its deadline plus the gateway's own lifetime of a request);
    `not_found_at`: the first "not found" after that, confirmed by a second one later.
    """
    conn.execute("ALTER TABLE payments ADD COLUMN lost_attempt_until INTEGER")  # UTC ms
    conn.execute("ALTER TABLE payments ADD COLUMN not_found_at INTEGER")        # UTC ms


_OWED = "(forward_state IN ('queued', 'unknown'))"


def _m0006_stuck_and_owed_totals(conn: sqlite3.Connection) -> None:
    """Payments that keep failing for reasons other than the network become *stuck*
    (reported, out of the forwarding queue and its age rule, until an operator requeues
    them), and the queue totals count everything still owed to the gateway —
    quarantined and stuck payments included — so the offline caps never forget money
    the box has promised."""
    conn.execute("ALTER TABLE payments ADD COLUMN stuck_at INTEGER")          # UTC ms
    conn.execute("ALTER TABLE payments ADD COLUMN error_attempts INTEGER NOT NULL DEFAULT 0")
    conn.execute("ALTER TABLE payments ADD COLUMN first_error_at INTEGER")    # UTC ms
    for name in ("insert", "delete", "update"):
        conn.execute(f"DROP TRIGGER queue_totals_{name}")
    # the f-strings below interpolate only the constant condition _OWED
    conn.execute(f"UPDATE queue_totals SET (count, amount) = (SELECT count(*), "
                 f"coalesce(sum(amount), 0) FROM payments WHERE {_OWED})")
    new, old = _OWED.replace("forward_state", "NEW.forward_state"), _OWED.replace(
        "forward_state", "OLD.forward_state")
    conn.execute(f"""
        CREATE TRIGGER queue_totals_insert AFTER INSERT ON payments WHEN {new}
        BEGIN UPDATE queue_totals SET count = count + 1, amount = amount + NEW.amount; END""")
    conn.execute(f"""
        CREATE TRIGGER queue_totals_delete AFTER DELETE ON payments WHEN {old}
        BEGIN UPDATE queue_totals SET count = count - 1, amount = amount - OLD.amount; END""")
    conn.execute(f"""
        CREATE TRIGGER queue_totals_update AFTER UPDATE OF forward_state, amount ON payments
        WHEN {old} OR {new}
        BEGIN
            UPDATE queue_totals SET
                count = count - ({old}) + ({new}),
                amount = amount - (CASE WHEN {old} THEN OLD.amount ELSE 0 END)
                                + (CASE WHEN {new} THEN NEW.amount ELSE 0 END);
        END""")


def _m0007_owed_by_currency(conn: sqlite3.Connection) -> None:
    """The owed amount of each currency, kept by triggers on the same condition as
    `queue_totals` (quarantined and stuck payments included): the offline caps are per
    currency, so a queue of USD must not eat the KRW cap, and every offline payment
    reads them in O(1)."""
    conn.execute("""
        CREATE TABLE queue_totals_by_currency (
            currency TEXT PRIMARY KEY,
            amount   INTEGER NOT NULL
        ) WITHOUT ROWID""")
    # the f-strings below interpolate only the constant condition _OWED
    conn.execute(f"INSERT INTO queue_totals_by_currency (currency, amount) "
                 f"SELECT currency, sum(amount) FROM payments WHERE {_OWED} GROUP BY currency")
    new, old = _OWED.replace("forward_state", "NEW.forward_state"), _OWED.replace(
        "forward_state", "OLD.forward_state")
    join = ("INSERT INTO queue_totals_by_currency (currency, amount) "
            "VALUES (NEW.currency, NEW.amount) "
            "ON CONFLICT (currency) DO UPDATE SET amount = amount + excluded.amount")
    leave = "UPDATE queue_totals_by_currency SET amount = amount - OLD.amount " \
            "WHERE currency = OLD.currency"
    for name, event, when, action in (
            ("insert", "INSERT", new, join), ("delete", "DELETE", old, leave),
            ("update_leave", "UPDATE OF forward_state, amount, currency", old, leave),
            ("update_join", "UPDATE OF forward_state, amount, currency", new, join)):
        conn.execute(f"CREATE TRIGGER queue_totals_by_currency_{name} AFTER {event} "
                     f"ON payments WHEN {when} BEGIN {action}; END")


def _m0008_wall_frame(conn: sqlite3.Connection) -> None:
    # the wall/monotonic offset stored times were written under (payments_cache.wall_frame)
    conn.execute("CREATE TABLE wall_frame (id INTEGER PRIMARY KEY CHECK (id = 1), "
                 "boot_id TEXT NOT NULL, offset_ms INTEGER NOT NULL)")


MIGRATIONS: tuple[Migration, ...] = (
    Migration("0001_initial", _m0001_initial),
    Migration("0002_queue_indexes", _m0002_queue_indexes),
    Migration("0003_queue_totals", _m0003_queue_totals),
    Migration("0004_card_protection", _m0004_card_protection),
    Migration("0005_lost_attempts", _m0005_lost_attempts),
    Migration("0006_stuck_and_owed_totals", _m0006_stuck_and_owed_totals),
    Migration("0007_owed_by_currency", _m0007_owed_by_currency),
    Migration("0008_wall_frame", _m0008_wall_frame),
)


def applied_migrations(conn: sqlite3.Connection) -> list[str]:
    _ensure_migrations_table(conn)
    return [r[0] for r in conn.execute("SELECT name FROM migrations ORDER BY id")]


def apply_migrations(conn: sqlite3.Connection,
                     migrations: Sequence[Migration] = MIGRATIONS) -> list[str]:
    """Apply every migration not yet recorded, in order; return the names applied.

    `conn` must be in autocommit mode (``isolation_level=None``). Refuses a database
    that records a migration this code does not know (it is newer than the firmware).
    """
    done = applied_migrations(conn)
    known = [m.name for m in migrations]
    unknown = [name for name in done if name not in known]
    if unknown:
        raise MigrationFailed(unknown[0], "the database was migrated by newer firmware "
                              f"(unknown migrations {unknown!r})")
    applied = []
    for migration in migrations:
        if migration.name not in done:
            _apply_one(conn, migration)
            applied.append(migration.name)
    return applied


def _ensure_migrations_table(conn: sqlite3.Connection) -> None:
    conn.execute("CREATE TABLE IF NOT EXISTS migrations ("
                 "id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, "
                 "applied_at INTEGER NOT NULL)")


def _apply_one(conn: sqlite3.Connection, migration: Migration) -> None:
    conn.execute("BEGIN IMMEDIATE")
    try:
        before = _row_counts(conn)
        migration.apply(conn)
        _check_no_rows_lost(migration.name, before, _row_counts(conn))
        conn.execute("INSERT INTO migrations (name, applied_at) VALUES (?, ?)",
                     (migration.name, int(time.time() * 1000)))
        conn.execute("COMMIT")
    except BaseException as exc:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        if isinstance(exc, MigrationFailed):
            raise
        if isinstance(exc, Exception):
            raise MigrationFailed(migration.name, f"{type(exc).__name__}: {exc}") from exc
        raise


def _row_counts(conn: sqlite3.Connection) -> dict[str, int]:
    present = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    return {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
            for t in GUARDED_TABLES if t in present}


def _check_no_rows_lost(name: str, before: dict[str, int], after: dict[str, int]) -> None:
    for table, count in before.items():
        if after.get(table, 0) < count:
            raise MigrationFailed(name, f"table {table!r} would go from {count} rows to "
                                  f"{after.get(table, 0)}; rolled back")
