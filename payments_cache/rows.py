"""A payment as a row of the ``payments`` table: the columns read and written, and the
conversions between rows and `Payment` (times are stored as milliseconds since the epoch)."""

from __future__ import annotations

import base64
import secrets
import sqlite3
from datetime import UTC, datetime
from typing import Any

from payments_cache.crypto import RecordBinding
from payments_cache.models import ForwardState, Payment, PaymentStatus
from payments_cache.protection import StoredCard

#: The column values that erase a payment's card, whichever form it was kept in.
NO_CARD: dict[str, Any] = dict(card_blob=None, key_id=None, card_sealed=None, seal_kid=None,
                               row_mac=None)

COLUMNS = """id, idempotency_key, created_at, amount, currency, merchant_id, terminal_id,
    reference, brand, last4, fingerprint,
    (card_blob IS NOT NULL OR card_sealed IS NOT NULL) AS has_card, key_id, seal_kid, status,
    forward_state, attempts, next_attempt_at, final_status, auth_code, decline_reason,
    last_error, quarantined, quarantine_reason, lost_attempt_until, not_found_at, stuck_at,
    error_attempts, first_error_at"""

#: Every column `Store._insert` writes, in order; the rest take their defaults.
INSERT_FIELDS = ("id", "idempotency_key", "request_hash", "created_at", "updated_at", "amount",
                 "currency", "merchant_id", "terminal_id", "reference", "brand", "last4",
                 "fingerprint", "card_blob", "key_id", "card_sealed", "seal_kid", "row_mac",
                 "status", "forward_state", "next_attempt_at", "decline_reason")
INSERT = (  # the only interpolations are constant column lists
    f"INSERT INTO payments ({', '.join(INSERT_FIELDS)}) "  # noqa: S608
    f"VALUES ({', '.join('?' * len(INSERT_FIELDS))}) RETURNING {COLUMNS}")

#: The columns a card's binding and stored form are read from.
CARD_COLUMNS = ("id, amount, currency, merchant_id, terminal_id, created_at, "
                "CAST(card_blob AS BLOB) AS card_blob, key_id, "
                "CAST(card_sealed AS BLOB) AS card_sealed, seal_kid, row_mac, status, "
                "forward_state")


def new_payment_id() -> str:
    """``pay_`` + 26 lower-case base32 characters (128 random bits)."""
    return "pay_" + base64.b32encode(secrets.token_bytes(16)).decode().rstrip("=").lower()


def to_ms(at: datetime) -> int:
    return int(at.timestamp() * 1000)


def from_ms(ms: int | None) -> datetime | None:
    return None if ms is None else datetime.fromtimestamp(ms / 1000, UTC)


def payment_from_row(row: sqlite3.Row) -> Payment:
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


def binding_of(row: sqlite3.Row) -> RecordBinding:
    return RecordBinding(row["id"], row["amount"], row["currency"], row["merchant_id"],
                         row["terminal_id"], row["created_at"])


def stored_card_of(row: sqlite3.Row) -> StoredCard:
    return StoredCard(row["card_blob"], row["key_id"], row["card_sealed"], row["seal_kid"],
                      row["row_mac"])


def sql_value(value: Any) -> Any:
    return value.value if isinstance(value, ForwardState | PaymentStatus) else value


def update_payment(conn: sqlite3.Connection, payment_id: str, **fields: Any) -> Payment:
    """Set `fields` (columns) of one payment; the row as it is afterwards."""
    assignments = ", ".join(f"{name} = ?" for name in fields)
    rows = conn.execute(
        f"UPDATE payments SET {assignments} WHERE id = ? RETURNING {COLUMNS}",  # noqa: S608
        (*(sql_value(v) for v in fields.values()), payment_id)).fetchall()
    return payment_from_row(rows[0])
