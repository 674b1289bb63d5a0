"""The life of the store's keys: made at first open, rotated, re-wrapped, retired.

A data key encrypts cards kept locally, an HMAC key makes fingerprints and row MACs;
both are wrapped under a KEK (`keysource`) and kept in the ``keys`` table. Rotation
makes new ones and re-protects every kept card in one transaction; a KEK rotation
re-wraps the keys. Payments under a key this KEK cannot unwrap are quarantined (kept,
counted, not forwarded) and released when the key is back.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sqlite3
from collections.abc import Iterator

from payments_cache.crypto import KeyRecord, KeyRing, Purpose, Wrapper, card_plaintext
from payments_cache.database import Database
from payments_cache.errors import RecordQuarantined
from payments_cache.keysource import RotatingWrapper
from payments_cache.models import Card, RotationReport
from payments_cache.protection import CARD_FIELD, CardProtection
from payments_cache.rows import CARD_COLUMNS, binding_of, stored_card_of, update_payment

log = logging.getLogger(__name__)

UNUSABLE_KEY_REASON = "data key cannot be unwrapped with this KEK"


class KeyRotation:
    """The store's keys, on the store's database and key ring (one thread, as `Store`)."""

    def __init__(self, db: Database, ring: KeyRing, protection: CardProtection) -> None:
        self._db = db
        self._ring = ring
        self.protection = protection

    def ensure_active_keys(self) -> None:
        current: list[tuple[Purpose, str | None]] = [
            ("data", self._ring.active_data_key_id), ("hmac", self._ring.hmac_key_id)]
        needed = [purpose for purpose, key_id in current if key_id is None]
        if not needed:
            return
        records = [self._ring.generate(p, self._db.now_ms()) for p in needed]
        with self._staged(records), self._db.tx("create keys") as conn:
            for record in records:
                conn.execute("UPDATE keys SET state = 'previous' "
                             "WHERE purpose = ? AND state = 'active'", (record.purpose,))
                insert_key(conn, record)

    @contextlib.contextmanager
    def _staged(self, records: list[KeyRecord]) -> Iterator[None]:
        """Keys made for one transaction: active in the ring once it has committed,
        forgotten if it fails (the ring never holds a key the database does not)."""
        try:
            yield
        except BaseException:
            for record in records:
                self._ring.forget(record.key_id)
            raise
        for record in records:
            self._ring.activate(record)

    def quarantine_unusable_keys(self) -> list[str]:
        unusable = sorted(self._ring.unusable)
        if not unusable:
            return []
        with self._db.tx("quarantine payments under unusable keys") as conn:
            rows = conn.execute(
                "UPDATE payments SET quarantined = 1, quarantine_reason = ?, updated_at = ? "
                "WHERE quarantined = 0 AND key_id IN (SELECT value FROM json_each(?)) "
                "RETURNING id", (UNUSABLE_KEY_REASON, self._db.now_ms(),
                                 json.dumps(unusable))).fetchall()
        return sorted(r[0] for r in rows)

    def release_recovered_keys(self) -> list[str]:
        """Payments quarantined because their key could not be unwrapped, whose key now
        can (the right KEK is back): back in the queue."""
        with self._db.tx("release payments whose key is back") as conn:
            rows = conn.execute(
                "SELECT id, key_id FROM payments WHERE quarantined = 1 "
                "AND quarantine_reason = ?", (UNUSABLE_KEY_REASON,)).fetchall()
            released = sorted(r["id"] for r in rows if self._ring.usable(r["key_id"]))
            conn.execute("UPDATE payments SET quarantined = 0, quarantine_reason = NULL, "
                         "updated_at = ? WHERE id IN (SELECT value FROM json_each(?))",
                         (self._db.now_ms(), json.dumps(released)))
        if released:
            log.warning("%d quarantined payments released: their key is usable again",
                        len(released))
        return released

    # hashing

    def rewrap_keys(self, wrapper: Wrapper) -> None:
        records = [r for r in load_key_records(self._db.conn)
                   if r.wrapped is not None and self._ring.usable(r.key_id)]
        with self._db.tx("re-wrap the keys") as conn:
            for record in records:
                new = self._ring.rewrap(record, wrapper)
                conn.execute("UPDATE keys SET wrapped = ? WHERE key_id = ?",
                             (new.wrapped, new.key_id))

    def rotate_keys(self) -> RotationReport:
        """A new data key and a new HMAC key; every kept card re-encrypted (local form)
        or its row re-MACed (sealed form) under them, and the data keys no longer used
        retired, all in one transaction. Statuses and forward states are untouched; a
        record that fails authentication is quarantined and keeps its old key. The
        previous HMAC key stays while its fingerprints can count (`retire_hmac_keys`)."""
        now = self._db.now_ms()
        new = [self._ring.generate("data", now), self._ring.generate("hmac", now)]
        with self._staged(new), self._db.tx("rotate keys") as conn:
            conn.execute("UPDATE keys SET state = 'previous' WHERE state = 'active'")
            for record in new:
                insert_key(conn, record)
            count, quarantined = self._reprotect_all(conn, new[0].key_id, new[1].key_id)
            retired = self._retire_unused_keys(conn)
        for key_id in retired:
            self._ring.forget(key_id)
        self._db.scrub()
        log.info("keys rotated to %s and %s: %d records re-protected, %d keys retired",
                 new[0].key_id, new[1].key_id, count, len(retired))
        return RotationReport(new[0].key_id, count, retired, quarantined, new[1].key_id)

    def _reprotect_all(self, conn: sqlite3.Connection, data_key_id: str,
                       hmac_key_id: str) -> tuple[int, list[str]]:
        count, quarantined = 0, []
        rows = conn.execute(
            f"SELECT {CARD_COLUMNS} FROM payments WHERE quarantined = 0 "  # noqa: S608
            "AND (card_blob IS NOT NULL OR card_sealed IS NOT NULL)").fetchall()
        for row in rows:
            binding, stored = binding_of(row), stored_card_of(row)
            try:
                card = self.protection.for_forwarding(binding, stored)
            except RecordQuarantined as exc:
                update_payment(conn, binding.payment_id, quarantined=1,
                               quarantine_reason=exc.reason, updated_at=self._db.now_ms())
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
        with self._db.guard("read the keys"):
            row = self._db.conn.execute("SELECT created_at FROM keys "
                                     "WHERE purpose = 'data' AND state = 'active'").fetchone()
        return 0.0 if row is None else max(0.0, (self._db.now_ms() - row[0]) / 1000)

    def rotate_kek(self, provider: RotatingWrapper) -> list[str]:
        """A new KEK in the provider; every key re-wrapped under it in one transaction,
        then the KEKs nothing is wrapped under any more retired. Returns those ids."""
        live = [r for r in load_key_records(self._db.conn) if r.wrapped is not None]
        old = {provider.wrapped_kek_id(r.wrapped) for r in live if r.wrapped is not None}
        new_id = provider.rotate_kek()
        self.rewrap_keys(provider)
        retired = sorted(k for k in old if k is not None and k != new_id)
        for kek_id in retired:
            provider.retire_kek(kek_id)
        log.info("KEK rotated to %s; %d keys re-wrapped; retired %s", new_id, len(live),
                 retired)
        return retired

    def _retire_unused_keys(self, conn: sqlite3.Connection) -> list[str]:
        rows = conn.execute(
            "UPDATE keys SET state = 'retired', wrapped = NULL, retired_at = ? "
            "WHERE purpose = 'data' AND state = 'previous' AND key_id NOT IN "
            "(SELECT key_id FROM payments WHERE key_id IS NOT NULL) RETURNING key_id",
            (self._db.now_ms(),)).fetchall()
        return sorted(r[0] for r in rows)

    # row access


def load_key_records(conn: sqlite3.Connection) -> list[KeyRecord]:
    rows = conn.execute("SELECT key_id, purpose, state, wrapped, created_at FROM keys").fetchall()
    return [KeyRecord(r["key_id"], r["purpose"], r["state"], r["wrapped"], r["created_at"])
            for r in rows]


def insert_key(conn: sqlite3.Connection, record: KeyRecord) -> None:
    conn.execute("INSERT INTO keys (key_id, purpose, state, wrapped, created_at) "
                 "VALUES (?, ?, ?, ?, ?)", (record.key_id, record.purpose, record.state,
                                            record.wrapped, record.created_at))
