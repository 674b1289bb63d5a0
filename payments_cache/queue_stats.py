"""What the store owes the gateway, as the offline risk rules and the status see it.

Read inside the caller's transaction (`Store.take_offline_many` decides each payment
against exactly the queue it joins). Count and amounts come from the tables the
triggers of migrations 0006 and 0007 keep current, so the rules read them in O(1).
"""

from __future__ import annotations

import json
import sqlite3
from datetime import datetime

from payments_cache.models import ForwardState, QueueStats
from payments_cache.rows import from_ms, to_ms
from payments_cache.wallclock import WALL_FLOOR


def read_queue_totals(conn: sqlite3.Connection) -> QueueStats:
    """Count and amount of everything owed to the gateway (quarantined and stuck
    included: the offline caps count them), the same amount per currency, and the
    oldest payment still being forwarded (the age rule: stuck, quarantined and
    clock-unset rows do not count)."""
    count, amount = conn.execute("SELECT count, amount FROM queue_totals").fetchone()
    by_currency = {str(currency): int(owed) for currency, owed in conn.execute(
        "SELECT currency, amount FROM queue_totals_by_currency WHERE amount <> 0")}
    floor = to_ms(WALL_FLOOR)
    (oldest,) = conn.execute(  # one index range per state
        "SELECT min(m) FROM (SELECT min(created_at) AS m FROM payments "
        "WHERE forward_state = 'queued' AND quarantined = 0 AND created_at >= ? "
        "AND stuck_at IS NULL UNION ALL SELECT min(created_at) FROM payments "
        "WHERE forward_state = 'unknown' AND quarantined = 0 AND created_at >= ? "
        "AND stuck_at IS NULL)", (floor, floor)).fetchone()
    return QueueStats(count, amount, from_ms(oldest), {}, by_currency)


def read_queue_stats(conn: sqlite3.Connection) -> QueueStats:
    """`read_queue_totals` and `by_state`: every payment by forward state, plus
    ``quarantined``, ``declined_after_offline`` and ``stuck``."""
    totals = read_queue_totals(conn)
    by_state = {s.value: 0 for s in ForwardState}
    by_state.update(conn.execute(
        "SELECT forward_state, count(*) FROM payments GROUP BY forward_state"))
    (by_state["quarantined"], by_state["declined_after_offline"],
     by_state["stuck"]) = conn.execute(
        "SELECT coalesce(sum(quarantined), 0), coalesce(sum(status = "
        "'approved_offline' AND final_status = 'declined'), 0), "
        "coalesce(sum(stuck_at IS NOT NULL AND forward_state IN ('queued', 'unknown')), 0) "
        "FROM payments").fetchone()
    return QueueStats(totals.count, totals.amount, totals.oldest_created_at, by_state,
                      totals.amount_by_currency)


def read_card_velocity(conn: sqlite3.Connection, fingerprints: list[str],
                       since: datetime) -> tuple[int, int]:
    """(count, amount) of offline-approved payments since `since` on the card with
    these fingerprints (one per HMAC key still counting)."""
    count, amount = conn.execute(
        "SELECT count(*), coalesce(sum(amount), 0) FROM payments "
        "WHERE fingerprint IN (SELECT value FROM json_each(?)) "
        "AND status = 'approved_offline' AND created_at >= ?",
        (json.dumps(fingerprints), to_ms(since))).fetchone()
    return int(count), int(amount)
