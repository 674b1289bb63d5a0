"""Upgrades keep the queue: a database made by the firmware before card protection
(schema 0001-0003, KEK file beside it, first6 and whole-PAN request hashes kept) is
opened by today's store, and every queued payment still forwards with its card.

`data/legacy-0003/` was written by storebox at commit 7345d1d with
`data/make_legacy_0003.py` (run against a checkout of that commit).
"""

from __future__ import annotations

import shutil
import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from payments_cache.crypto import load_or_create_kek
from payments_cache.database import DB_NAME
from payments_cache.errors import KeyMaterialError, RecordQuarantined
from payments_cache.migrations import MIGRATIONS, applied_migrations
from payments_cache.models import Card, ForwardState, PaymentRequest, PaymentStatus
from payments_cache.sealing import SealedCard, SealKey, SealOpener, generate_keypair
from payments_cache.store import Store

LEGACY = Path(__file__).parent / "data" / "legacy-0003"
PANS = {"q1": "4111111111111111", "q2": "5555555555554444", "u": "4012888888881881",
        "p": "378282246310005", "d": "6011111111111117", "f": "4000056655665556",
        "x": "5105105105105100"}
STILL_OWED = ("q1", "q2", "u", "d", "p")  # queued, unknown, dead, interrupted
T = datetime(2023, 11, 15, tzinfo=UTC).timestamp()
#: A fixed moment (a clock that neither passes nor is set: no wall-clock step is seen).
AT_T: dict[str, Any] = {"wall": lambda: T, "monotonic": lambda: 0.0}


@pytest.fixture
def legacy(tmp_path: Path) -> Path:
    state = tmp_path / "state"
    shutil.copytree(LEGACY, state)
    (state / "kek").chmod(0o600)
    (state / DB_NAME).chmod(0o600)
    return state


def _rows(state: Path) -> dict[str, sqlite3.Row]:
    conn = sqlite3.connect(state / DB_NAME)
    conn.row_factory = sqlite3.Row
    try:
        return {r["idempotency_key"]: r for r in conn.execute("SELECT * FROM payments")}
    finally:
        conn.close()


def _payment_id(store: Store, key: str) -> str:
    found = store.lookup_idempotency(key)
    assert found is not None, key
    return found[0].id


def test_the_legacy_fixture_is_what_the_old_firmware_wrote(legacy: Path) -> None:
    conn = sqlite3.connect(legacy / DB_NAME)
    try:
        assert applied_migrations(conn) == [m.name for m in MIGRATIONS[:3]]
    finally:
        conn.close()
    rows = _rows(legacy)
    assert {k: r["first6"] for k, r in rows.items()} == {k: p[:6] for k, p in PANS.items()}
    assert all(r["card_blob"][0] == 1 for k, r in rows.items() if k in STILL_OWED)


def test_an_upgrade_in_place_keeps_every_queued_card_bound_to_its_row(legacy: Path) -> None:
    store = Store.open(legacy, legacy / "kek", **AT_T)
    try:
        assert "0004_card_protection" in store.report.applied_migrations
        assert len(store.report.upgraded) == len(STILL_OWED)
        for key in STILL_OWED:
            card = store.card_for_forwarding(_payment_id(store, key))
            assert isinstance(card, Card) and card.pan == PANS[key]
        stats = store.queue_stats()
        assert (stats.count, stats.by_state["dead"]) == (4, 1)  # q1 q2 u p; d is dead
        assert stats.amount_by_currency == {"KRW": stats.amount}  # filled by 0007
    finally:
        store.close()
    rows = _rows(legacy)
    assert all(r["first6"] is None for r in rows.values())
    assert all(r["request_hash"] is None for r in rows.values())  # held the whole PAN
    assert all(r["card_blob"][0] == 2 for k, r in rows.items() if k in STILL_OWED)


def test_a_retry_of_an_upgraded_payment_gets_its_first_answer(legacy: Path) -> None:
    store = Store.open(legacy, legacy / "kek", **AT_T)
    try:
        found = store.lookup_idempotency("q1")
        assert found is not None
        payment, stored_hash = found
        assert stored_hash is None and payment.status is PaymentStatus.APPROVED_OFFLINE
    finally:
        store.close()


def test_with_a_seal_key_the_upgrade_seals_every_card_and_keeps_no_local_form(
        legacy: Path, tmp_path: Path) -> None:
    private, public = generate_keypair()
    opener = SealOpener()
    opener.add_private_key(private)
    store = Store.open(legacy, legacy / "kek", **AT_T,
                       seal_key=SealKey.from_pem(public))
    try:
        for key in STILL_OWED:
            pid = _payment_id(store, key)
            sealed = store.card_for_forwarding(pid)
            assert isinstance(sealed, SealedCard)
            assert opener.open(pid, sealed)["pan"] == PANS[key]
        assert store.get(_payment_id(store, "u")).forward_state is ForwardState.UNKNOWN  # type: ignore[union-attr]
    finally:
        store.close()
    rows = _rows(legacy)
    assert all(r["card_blob"] is None for r in rows.values())
    assert all(r["card_sealed"] is not None for k, r in rows.items() if k in STILL_OWED)


def test_moving_to_a_key_provider_rewraps_the_keys_and_erases_the_old_kek(
        legacy: Path, tmp_path: Path) -> None:
    provider_kek = tmp_path / "elsewhere" / "kek"   # stands in for a token-held KEK
    store = Store.open(legacy, provider_kek, **AT_T, legacy_kek=legacy / "kek")
    try:
        pid = _payment_id(store, "q2")
        card = store.card_for_forwarding(pid)
        assert isinstance(card, Card) and card.pan == PANS["q2"]
    finally:
        store.close()
    assert not (legacy / "kek").exists()
    reopened = Store.open(legacy, provider_kek, **AT_T)
    try:
        card = reopened.card_for_forwarding(_payment_id(reopened, "q1"))
        assert isinstance(card, Card) and card.pan == PANS["q1"]
        assert reopened.report.quarantined == []
    finally:
        reopened.close()


def test_a_missing_kek_is_never_replaced_while_keys_are_wrapped_by_it(legacy: Path) -> None:
    (legacy / "kek").unlink()
    with pytest.raises(KeyMaterialError, match="missing"):
        Store.open(legacy, legacy / "kek", **AT_T)
    assert not (legacy / "kek").exists()
    # nothing was changed: restoring the key opens the queue again
    shutil.copy(LEGACY / "kek", legacy / "kek")
    (legacy / "kek").chmod(0o600)
    store = Store.open(legacy, legacy / "kek", **AT_T)
    try:
        assert store.report.quarantined == []
        assert store.queue_stats().count == 4
    finally:
        store.close()


def test_a_new_box_may_create_its_kek(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "state", tmp_path / "keys" / "kek", **AT_T)
    store.close()
    assert load_or_create_kek(tmp_path / "keys" / "kek").path.endswith("kek")


@pytest.mark.parametrize("sealed", [False, True])
@pytest.mark.parametrize(("column", "value"), [("amount", 1), ("currency", "USD"),
                                               ("terminal_id", "pos-9"),
                                               ("merchant_id", "other-merchant"),
                                               ("created_at", 1)])
def test_an_edited_row_is_quarantined_never_forwarded(tmp_path: Path, sealed: bool,
                                                      column: str, value: object) -> None:
    """Amount, currency, merchant, terminal and time are bound to the kept card (AEAD
    associated data; for a sealed card a keyed row MAC): a row edited from 1200 KRW to
    1 USD no longer opens, it is quarantined and reported."""
    _, public = generate_keypair()
    store = Store.open(tmp_path / "state", tmp_path / "state" / "kek", **AT_T,
                       merchant_id="m-1", seal_key=SealKey.from_pem(public) if sealed else None)
    try:
        request = PaymentRequest(1200, "KRW", Card(PANS["q1"], 12, 2030, "123"), "pos-1", "r")
        payment = store.begin_online("k", request)
        kept = store.card_for_forwarding(payment.id)
        assert isinstance(kept, SealedCard) is sealed
        conn = sqlite3.connect(tmp_path / "state" / DB_NAME)
        with conn:
            conn.execute(f"UPDATE payments SET {column} = ? WHERE id = ?",
                         (value, payment.id))
        conn.close()
        with pytest.raises(RecordQuarantined):
            store.card_for_forwarding(payment.id)
        got = store.get(payment.id)
        assert got is not None and got.quarantined
    finally:
        store.close()


def test_a_database_is_snapshotted_before_it_is_migrated(legacy: Path) -> None:
    """An A/B update rolled back: the earlier firmware refuses the migrated database, so
    the store keeps it as it was before migrating (``VACUUM INTO``, 0600)."""
    Store.open(legacy, legacy / "kek", **AT_T).close()
    snapshot = legacy / f"{DB_NAME}.before-0004_card_protection"
    assert snapshot.exists() and (snapshot.stat().st_mode & 0o777) == 0o600
    conn = sqlite3.connect(snapshot)
    try:
        assert applied_migrations(conn) == [m.name for m in MIGRATIONS[:3]]
        assert conn.execute("SELECT count(*) FROM payments").fetchone()[0] == len(PANS)
    finally:
        conn.close()
    Store.open(legacy, legacy / "kek", **AT_T).close()  # nothing pending: none
    assert sorted(p.name for p in legacy.glob(f"{DB_NAME}.before-*")) == [snapshot.name]


def test_a_new_database_needs_no_snapshot(tmp_path: Path) -> None:
    Store.open(tmp_path / "state", tmp_path / "kek", **AT_T).close()
    assert list((tmp_path / "state").glob(f"{DB_NAME}.before-*")) == []
