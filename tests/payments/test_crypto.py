"""Envelope encryption: KEK file handling, key wrapping, sealed records, fingerprints."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from payments_cache.crypto import (
    KEY_BYTES,
    Kek,
    KeyRing,
    RecordBinding,
    _record_aad,
    blob_key_id,
    canonical_request,
    card_from_plaintext,
    card_plaintext,
    load_or_create_kek,
    request_hash,
)
from payments_cache.errors import KeyMaterialError, RecordQuarantined
from payments_cache.models import Card, PaymentRequest


def B(payment_id: str, **changes: object) -> RecordBinding:
    """The row binding of a test record."""
    fields: dict[str, object] = dict(payment_id=payment_id, amount=1000, currency="KRW",
                                     merchant_id="m-1", terminal_id="pos-1",
                                     created_at_ms=1_700_000_000_000)
    fields.update(changes)
    return RecordBinding(**fields)  # type: ignore[arg-type]


@pytest.fixture
def kek(tmp_path: Path) -> Kek:
    return load_or_create_kek(tmp_path / "kek.key")


@pytest.fixture
def ring(kek: Kek) -> KeyRing:
    ring = KeyRing(kek, [])
    for purpose in ("data", "hmac"):
        ring.activate(ring.generate(purpose, 0))
    return ring


# --- the KEK file ----------------------------------------------------------------------


def test_kek_is_created_0600_with_32_random_bytes(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "kek.key"
    load_or_create_kek(path)
    st_ = path.stat()
    assert stat.S_IMODE(st_.st_mode) == 0o600
    assert st_.st_size == KEY_BYTES
    assert not list(path.parent.glob(".*.tmp")), "temporary file left behind"
    other = load_or_create_kek(tmp_path / "other.key")
    assert path.read_bytes() != (tmp_path / "other.key").read_bytes()
    del other


def test_existing_kek_is_loaded_not_replaced(tmp_path: Path) -> None:
    path = tmp_path / "kek.key"
    first = load_or_create_kek(path)
    content = path.read_bytes()
    second = load_or_create_kek(path)
    assert path.read_bytes() == content
    wrapped = first.wrap("dk_1", "data", b"k" * 32)
    assert second.unwrap("dk_1", "data", wrapped) == b"k" * 32


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o660, 0o700 | 0o007])
def test_kek_readable_by_group_or_other_is_refused(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "kek.key"
    load_or_create_kek(path)
    os.chmod(path, mode)
    with pytest.raises(KeyMaterialError) as info:
        load_or_create_kek(path)
    assert info.value.path == str(path)
    assert "0600" in info.value.reason


@pytest.mark.parametrize("size", [0, 16, 31, 33, 64])
def test_kek_of_wrong_size_is_refused(tmp_path: Path, size: int) -> None:
    path = tmp_path / "kek.key"
    path.write_bytes(b"x" * size)
    os.chmod(path, 0o600)
    with pytest.raises(KeyMaterialError, match="size"):
        load_or_create_kek(path)
    assert path.read_bytes() == b"x" * size, "a bad KEK must never be overwritten"


def test_kek_symlink_is_refused(tmp_path: Path) -> None:
    real = tmp_path / "real.key"
    load_or_create_kek(real)
    link = tmp_path / "kek.key"
    link.symlink_to(real)
    with pytest.raises(KeyMaterialError):
        load_or_create_kek(link)


# --- key wrapping ----------------------------------------------------------------------


def test_wrapped_key_only_opens_with_its_kek_id_and_purpose(tmp_path: Path, kek: Kek) -> None:
    wrapped = kek.wrap("dk_a", "data", b"\x01" * 32)
    assert kek.unwrap("dk_a", "data", wrapped) == b"\x01" * 32
    assert b"\x01" * 32 not in wrapped
    with pytest.raises(KeyMaterialError):
        kek.unwrap("dk_b", "data", wrapped)
    with pytest.raises(KeyMaterialError):
        kek.unwrap("dk_a", "hmac", wrapped)
    other = load_or_create_kek(tmp_path / "other.key")
    with pytest.raises(KeyMaterialError):
        other.unwrap("dk_a", "data", wrapped)


def test_ring_with_wrong_kek_lists_unusable_keys_and_quarantines_records(
        tmp_path: Path, ring: KeyRing, kek: Kek) -> None:
    records = [ring.generate("data", 1)]
    ring.activate(records[0])
    blob = ring.encrypt(B("pay_1"), "card", b"secret")
    other = KeyRing(load_or_create_kek(tmp_path / "other.key"), records)
    assert other.unusable == {records[0].key_id}
    assert other.active_data_key_id is None
    with pytest.raises(RecordQuarantined) as info:
        other.decrypt(B("pay_1"), "card", blob)
    assert info.value.payment_id == "pay_1"
    assert "not available" in info.value.reason
    same = KeyRing(kek, records)
    assert same.unusable == frozenset()
    assert same.decrypt(B("pay_1"), "card", blob) == b"secret"


# --- sealed records --------------------------------------------------------------------


def test_round_trip(ring: KeyRing) -> None:
    blob = ring.encrypt(B("pay_1"), "card", b"4111111111111111")
    assert b"4111111111111111" not in blob
    assert blob_key_id(blob) == ring.active_data_key_id
    assert ring.decrypt(B("pay_1"), "card", blob) == b"4111111111111111"


@settings(max_examples=50, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])  # ring is stateless
@given(payment_id=st.text(min_size=1, max_size=40), field=st.text(min_size=1, max_size=10),
       plaintext=st.binary(max_size=200))
def test_round_trip_any_input(ring: KeyRing, payment_id: str, field: str,
                              plaintext: bytes) -> None:
    blob = ring.encrypt(B(payment_id), field, plaintext)
    assert ring.decrypt(B(payment_id), field, blob) == plaintext


def test_every_record_gets_a_fresh_nonce(ring: KeyRing) -> None:
    blobs = {ring.encrypt(B("pay_1"), "card", b"same") for _ in range(50)}
    assert len(blobs) == 50


@pytest.mark.parametrize("position", [0, 1, 5, 30, -17, -1])
def test_tampered_ciphertext_is_quarantined(ring: KeyRing, position: int) -> None:
    blob = bytearray(ring.encrypt(B("pay_1"), "card", b"4111111111111111"))
    blob[position] ^= 0x01
    with pytest.raises(RecordQuarantined) as info:
        ring.decrypt(B("pay_1"), "card", bytes(blob))
    assert (info.value.payment_id, info.value.field) == ("pay_1", "card")


def test_truncated_ciphertext_is_quarantined(ring: KeyRing) -> None:
    blob = ring.encrypt(B("pay_1"), "card", b"x")
    for cut in (0, 1, 3, len(blob) - 1):
        with pytest.raises(RecordQuarantined):
            ring.decrypt(B("pay_1"), "card", blob[:cut])


def test_ciphertext_is_bound_to_payment_and_field(ring: KeyRing) -> None:
    a = ring.encrypt(B("pay_a"), "card", b"card of a")
    b = ring.encrypt(B("pay_b"), "card", b"card of b")
    with pytest.raises(RecordQuarantined):
        ring.decrypt(B("pay_b"), "card", a)
    with pytest.raises(RecordQuarantined):
        ring.decrypt(B("pay_a"), "card", b)
    with pytest.raises(RecordQuarantined):
        ring.decrypt(B("pay_a"), "other", a)


def test_ciphertext_is_bound_to_key_id(ring: KeyRing) -> None:
    """Relabelling a blob with another valid key id does not authenticate."""
    first = ring.active_data_key_id
    assert first is not None
    second = ring.generate("data", 2)
    ring.activate(second)
    blob = ring.encrypt(B("pay_1"), "card", b"data", key_id=first)
    assert len(first) == len(second.key_id)
    relabelled = blob.replace(first.encode(), second.key_id.encode())
    assert blob_key_id(relabelled) == second.key_id
    with pytest.raises(RecordQuarantined, match="authentication failed"):
        ring.decrypt(B("pay_1"), "card", relabelled)


def test_forgotten_key_cannot_decrypt(ring: KeyRing) -> None:
    key_id = ring.active_data_key_id
    assert key_id is not None
    blob = ring.encrypt(B("pay_1"), "card", b"data")
    ring.forget(key_id)
    with pytest.raises(RecordQuarantined):
        ring.decrypt(B("pay_1"), "card", blob)


# --- fingerprints and request hashes ---------------------------------------------------


def test_fingerprint_is_stable_keyed_and_not_the_pan(tmp_path: Path, ring: KeyRing) -> None:
    fp = ring.fingerprint("4111111111111111")
    assert fp == ring.fingerprint("4111111111111111")
    assert fp != ring.fingerprint("4111111111111112")
    assert "4111111111111111" not in fp and len(fp) == 64
    other = KeyRing(load_or_create_kek(tmp_path / "o.key"), [])
    other.activate(other.generate("hmac", 0))
    assert other.fingerprint("4111111111111111") != fp


def _request(**overrides: object) -> PaymentRequest:
    card = Card("4111111111111111", 12, 2030, cvc="123")
    fields: dict[str, object] = dict(amount=1000, currency="KRW", card=card,
                                     terminal_id="pos-1", reference="r-1")
    fields.update(overrides)
    return PaymentRequest(**fields)  # type: ignore[arg-type]


def test_request_hash_detects_a_changed_body_but_holds_no_card_number() -> None:
    base = request_hash(_request())
    assert request_hash(_request()) == base and base.startswith("v2:")
    assert request_hash(_request(card=Card("4111111111111111", 12, 2030, "999"))) == base
    for changed in (_request(amount=1001), _request(currency="USD"),
                    _request(card=Card("4000000000001111", 12, 2030, "123"[:3] + "")),
                    _request(card=Card("4111111111111112", 12, 2030, "123")),
                    _request(card=Card("4111111111111111", 11, 2030, "123")),
                    _request(card=Card("411111111111111", 12, 2030, "123")),
                    _request(terminal_id="pos-2"), _request(reference=None)):
        assert request_hash(changed) != base or (changed.card.last4 == "1111" and len(
            changed.card.pan) == 16 and changed.amount == 1000 and changed.card.exp_month == 12)
    # what it covers: no CVC, and of the PAN only the last four digits and its length
    canonical = canonical_request(_request(card=Card("4000000000000002", 1, 2030, "123")))
    assert b"123" not in canonical and b"400000" not in canonical and b"0002" in canonical


def test_request_hash_is_the_same_for_cards_differing_only_in_the_middle() -> None:
    a = _request(card=Card("4111111111111111", 12, 2030, "123"))
    b = _request(card=Card("4000000000001111", 12, 2030, "123"))
    assert request_hash(a) == request_hash(b)  # a thief can test no PAN guess against it


def test_records_are_bound_to_their_row(ring: KeyRing) -> None:
    blob = ring.encrypt(B("pay_1"), "card", b"4111111111111111")
    assert ring.decrypt(B("pay_1"), "card", blob) == b"4111111111111111"
    for change in ({"amount": 1}, {"currency": "USD"}, {"merchant_id": "m-2"},
                   {"terminal_id": "pos-9"}, {"terminal_id": None},
                   {"created_at_ms": 1_700_000_000_001}):
        with pytest.raises(RecordQuarantined, match="authentication failed"):
            ring.decrypt(B("pay_1", **change), "card", blob)


def test_legacy_records_without_the_row_binding_still_open(ring: KeyRing) -> None:
    """Blobs of the first format (firmware before 0004) open for the upgrade."""
    key_id = ring.active_data_key_id
    assert key_id is not None
    nonce = os.urandom(12)
    body = AESGCM(ring._keys[key_id]).encrypt(nonce, b"legacy card",
                                              _record_aad("pay_1", "card", key_id))
    blob = bytes([1, len(key_id)]) + key_id.encode() + nonce + body
    assert ring.decrypt(B("pay_1", amount=5), "card", blob) == b"legacy card"
    with pytest.raises(RecordQuarantined):
        ring.decrypt(B("pay_2"), "card", blob)


def test_fingerprints_after_a_rotation_cover_both_keys(ring: KeyRing) -> None:
    before = ring.fingerprint("4111111111111111")
    ring.activate(ring.generate("hmac", 5))
    after = ring.fingerprint("4111111111111111")
    assert after != before
    assert ring.fingerprints("4111111111111111") == [after, before]


def test_ephemeral_fingerprints_use_a_key_that_is_never_stored(kek: Kek) -> None:
    records = [KeyRing(kek, []).generate("hmac", 0)]
    records = [records[0].__class__(records[0].key_id, "hmac", "active", records[0].wrapped,
                                    0)]
    one = KeyRing(kek, records, ephemeral_fingerprints=True)
    two = KeyRing(kek, records, ephemeral_fingerprints=True)
    stored = KeyRing(kek, records)
    pan = "4111111111111111"
    assert one.fingerprint(pan) == one.fingerprint(pan)
    assert len({one.fingerprint(pan), two.fingerprint(pan), stored.fingerprint(pan)}) == 3
    # the MAC that binds sealed rows still uses the stored key: it must survive a restart
    assert one.mac("x", b"row") == stored.mac("x", b"row")


def test_a_mac_names_its_key_and_verifies_after_a_rotation(ring: KeyRing) -> None:
    tag = ring.mac("sealed-card-row", b"row")
    ring.activate(ring.generate("hmac", 5))
    assert ring.verify_mac("sealed-card-row", b"row", tag)
    assert not ring.verify_mac("sealed-card-row", b"row2", tag)
    assert not ring.verify_mac("sealed-card-row", b"row", "hk_unknown:" + tag.split(":")[1])
    assert not ring.verify_mac("sealed-card-row", b"row", None)


def test_sealed_card_never_holds_the_cvc() -> None:
    card = Card("4111111111111111", 12, 2030, cvc="987")
    plaintext = card_plaintext(card)
    assert b"987" not in plaintext and b"cvc" not in plaintext
    restored = card_from_plaintext("pay_1", plaintext)
    assert (restored.pan, restored.exp_month, restored.exp_year, restored.cvc) == (
        "4111111111111111", 12, 2030, None)
    with pytest.raises(RecordQuarantined):
        card_from_plaintext("pay_1", b"not json")
