"""Nothing kept longer than it is needed: fingerprints, old HMAC keys, settled rows.

Run periodically by the daemon (`Store.expire`), each step in the caller's transaction:

* **fingerprints** (keyed hashes of card numbers, for the per-card velocity rule) are
  erased once the velocity window has passed: after that they can only help someone
  match cards across payments;
* **previous HMAC keys** are retired (their wrapped form erased) once every fingerprint
  they made is past the window;
* **settled rows** — online payments, offline declines, forwarded payments: nothing
  more is owed on them — are deleted after `retention_days`; their counts and amounts
  per UTC day, currency, status and gateway outcome are added to `settled_totals` for
  reconciliation. Payments still owed (queued, unknown), dead or quarantined ones are
  never purged: they need a person.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

DAY_MS = 86_400_000

_SETTLED = ("status <> 'pending' AND forward_state IN ('none', 'forwarded') "
            "AND quarantined = 0 AND created_at < ?")


@dataclass(frozen=True)
class ExpiryReport:
    fingerprints_erased: int
    hmac_keys_retired: list[str]
    rows_purged: int


def erase_fingerprints(conn: sqlite3.Connection, before_ms: int) -> int:
    return conn.execute("UPDATE payments SET fingerprint = NULL "
                        "WHERE fingerprint IS NOT NULL AND created_at < ?",
                        (before_ms,)).rowcount


def retire_hmac_keys(conn: sqlite3.Connection, before_ms: int, now_ms: int) -> list[str]:
    """Retire previous HMAC keys when the active one is older than `before_ms` (so no
    fingerprint still inside the window was made with them)."""
    rows = conn.execute(
        "UPDATE keys SET state = 'retired', wrapped = NULL, retired_at = ? "
        "WHERE purpose = 'hmac' AND state = 'previous' AND EXISTS (SELECT 1 FROM keys "
        "WHERE purpose = 'hmac' AND state = 'active' AND created_at < ?) RETURNING key_id",
        (now_ms, before_ms)).fetchall()
    return sorted(r[0] for r in rows)


def purge_settled(conn: sqlite3.Connection, before_ms: int) -> int:
    """Fold settled rows older than `before_ms` into `settled_totals`, then delete them."""
    conn.execute(  # the only interpolation is the constant condition _SETTLED
        "INSERT INTO settled_totals (day, currency, status, final_status, count, amount) "  # noqa: S608
        "SELECT date(created_at / 1000, 'unixepoch'), currency, status, "
        f"coalesce(final_status, ''), count(*), sum(amount) FROM payments WHERE {_SETTLED} "
        "GROUP BY 1, 2, 3, 4 "
        "ON CONFLICT (day, currency, status, final_status) DO UPDATE SET "
        "count = count + excluded.count, amount = amount + excluded.amount", (before_ms,))
    return conn.execute(f"DELETE FROM payments WHERE {_SETTLED}",  # noqa: S608
                        (before_ms,)).rowcount


def settled_totals(conn: sqlite3.Connection) -> list[dict[str, object]]:
    rows = conn.execute("SELECT day, currency, status, final_status, count, amount "
                        "FROM settled_totals ORDER BY day, currency, status, final_status")
    return [dict(zip(("day", "currency", "status", "final_status", "count", "amount"), r,
                     strict=True)) for r in rows]
