"""Bring rows written by earlier firmware (or under an earlier policy) up to today's.

Run by `Store.open` in one transaction after the schema migrations, so an upgrade
never loses a queued payment: every card still kept is re-protected in place
(`CardProtection.protect`), or quarantined when it no longer authenticates.

* cards encrypted with the first record format (no row binding) are re-encrypted with
  the row bound, or sealed to the gateway when a seal key is configured;
* with a seal key, every locally encrypted card is sealed: the box keeps no form of a
  card it can open once the gateway has given it a seal key;
* ``first6`` is erased (brand and the blocked-BIN rule need it only at acceptance);
* request hashes of the old keyed form (the whole PAN inside) are erased: a POS retry
  under such a key gets the stored answer.
"""

from __future__ import annotations

import logging
import sqlite3

from payments_cache.crypto import REQUEST_HASH_PREFIX, RecordBinding, blob_version
from payments_cache.errors import RecordQuarantined
from payments_cache.protection import CardProtection

log = logging.getLogger(__name__)

#: The schema migration the upgrade works on (a store opened with fewer runs none).
UPGRADE_NEEDS = "0004_card_protection"

_KEPT_CARDS = ("SELECT id, amount, currency, merchant_id, terminal_id, created_at, "
               "CAST(card_blob AS BLOB) AS card_blob, key_id FROM payments "
               "WHERE card_blob IS NOT NULL AND quarantined = 0")


def upgrade_rows(conn: sqlite3.Connection, protection: CardProtection,
                 now_ms: int) -> list[str]:
    """Re-protect what needs it (see the module doc); return the payment ids changed.

    `conn` must be inside a write transaction."""
    upgraded = [row["id"] for row in conn.execute(_KEPT_CARDS).fetchall()
                if _needs_upgrade(row, protection) and _reprotect(conn, row, protection,
                                                                  now_ms)]
    conn.execute("UPDATE payments SET first6 = NULL WHERE first6 IS NOT NULL")
    conn.execute("UPDATE payments SET request_hash = NULL "
                 "WHERE request_hash IS NOT NULL AND substr(request_hash, 1, ?) <> ?",
                 (len(REQUEST_HASH_PREFIX), REQUEST_HASH_PREFIX))
    if upgraded:
        log.warning("%d stored cards re-protected (%s)", len(upgraded), protection.mode)
    return upgraded


def _needs_upgrade(row: sqlite3.Row, protection: CardProtection) -> bool:
    return protection.mode == "sealed" or blob_version(row["card_blob"]) != 2


def _reprotect(conn: sqlite3.Connection, row: sqlite3.Row, protection: CardProtection,
               now_ms: int) -> bool:
    binding = RecordBinding(row["id"], row["amount"], row["currency"], row["merchant_id"],
                            row["terminal_id"], row["created_at"])
    try:
        card = protection.open_local(binding, row["card_blob"], row["key_id"])
    except RecordQuarantined as exc:
        conn.execute("UPDATE payments SET quarantined = 1, quarantine_reason = ?, "
                     "updated_at = ? WHERE id = ?", (exc.reason, now_ms, row["id"]))
        log.error("payment %s quarantined during the upgrade: %s", row["id"], exc.reason)
        return False
    stored = protection.protect(binding, card)
    conn.execute("UPDATE payments SET card_blob = ?, key_id = ?, card_sealed = ?, "
                 "seal_kid = ?, row_mac = ?, updated_at = ? WHERE id = ?",
                 (stored.card_blob, stored.key_id, stored.card_sealed, stored.seal_kid,
                  stored.row_mac, now_ms, row["id"]))
    return True
