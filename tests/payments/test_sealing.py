"""Sealed cards (docs/gateway-protocol.md): the suite against RFC 9180's published vectors and
against an independent implementation (cryptography's HPKE), then the contract around it:
aad = payment id, kid, PEM handling, the JSON and blob forms, and no PAN anywhere."""

from __future__ import annotations

import base64
import hashlib
import json
import logging
from pathlib import Path

import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hpke, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from hypothesis import given, settings
from hypothesis import strategies as st
from pyhpke import AEADId, CipherSuite, KDFId, KEMId, OpenError

from payments_cache.errors import PaymentsError, SealedCardError, SealKeyError
from payments_cache.models import Card
from payments_cache.sealing import (
    BLOB_VERSION,
    INFO,
    SUITE,
    SealedCard,
    SealKey,
    SealOpener,
    card_plaintext,
    generate_keypair,
    hpke_open,
    hpke_seal,
    seal_card,
)

PAN = "4111111111111111"
CARD = Card(pan=PAN, exp_month=12, exp_year=2028, cvc="123")
PAYMENT_ID = "pay_01HZX3K9"


def h(value: str) -> bytes:
    return bytes.fromhex(value)


# --- RFC 9180 test vectors ---------------------------------------------------------------
# Literals copied from the published vectors (not the files): RFC 9180 Appendix A.1.1 and
# the CFRG test-vectors.json that accompanies it (github.com/cfrg/draft-irtf-cfrg-hpke).
# The info, aad and plaintext are the vectors' own ("Ode on a Grecian Urn", "Count-0",
# "Beauty is truth, truth beauty"); sequence number 0 is what a single-shot seal gives.
V_INFO = h("4f6465206f6e2061204772656369616e2055726e")
V_AAD0 = h("436f756e742d30")
V_PT = h("4265617574792069732074727574682c20747275746820626561757479")

# mode 0, kem 0x0020, kdf 0x0001, aead 0x0002 (AES-256-GCM): exactly the storebox suite.
# CFRG test-vectors.json (values as also carried by BoringSSL's hpke_test_vectors.txt).
AES256 = {
    "ikmR": h("dac33b0e9db1b59dbbea58d59a14e7b5896e9bdf98fad6891e99d1686492b9ee"),
    "skRm": h("497b4502664cfea5d5af0b39934dac72242a74f8480451e1aee7d6a53320333d"),
    "pkRm": h("430f4b9859665145a6b1ba274024487bd66f03a2dd577d7753c68d7d7d00c00c"),
    "skEm": h("179d4b53b6365c45b600c4163b61d95cbc2f4d9e36f1695558dce265ab8bab11"),
    "pkEm": h("6c93e09869df3402d7bf231bf540fadd35cd56be14f97178f0954db94b7fc256"),
    "ct0": h("e5d84cd531cfb583096e7cfa9641bd3079cf3a91cda813c52deb5f512be99319"
             "80a41de125a925cdad859d5b7a"),
}

# RFC 9180 Appendix A.1.1: mode 0, kem 0x0020, kdf 0x0001, aead 0x0001 (AES-128-GCM) —
# the same KEM and KDF, so the same key derivation, with both ikmE and ikmR published.
A11 = {
    "ikmE": h("7268600d403fce431561aef583ee1613527cff655c1343f29812e66706df3234"),
    "skEm": h("52c4a758a802cd8b936eceea314432798d5baf2d7e9235dc084ab1b9cfa2f736"),
    "pkEm": h("37fda3567bdbd628e88668c3c8d7e97d1d1253b6d4ea6d44c150f741f1bf4431"),
    "ikmR": h("6db9df30aa07dd42ee5e8181afdb977e538f5e1fec8a06223f33f7013e525037"),
    "skRm": h("4612c550263fc8ad58375df3f557aac531d26850903e55a9f23f21d8534e8ac8"),
    "pkRm": h("3948cfe0ad1ddb695d780e59077195da6c56506b027329794ab02bca80815c4d"),
    "ct0": h("f938558b5d72f1a23810b4be2ab4f84331acc02fc97babc53a52ae8218a355a9"
             "6d8770ac83d07bea87e13c512a"),
}


def test_the_suite_is_the_contracts_one() -> None:
    assert (SUITE.kem.id, SUITE.kdf.id, SUITE.aead.id) == (
        KEMId.DHKEM_X25519_HKDF_SHA256, KDFId.HKDF_SHA256, AEADId.AES256_GCM)
    assert (SUITE.kem.id.value, SUITE.kdf.id.value, SUITE.aead.id.value) == (0x20, 1, 2)
    assert INFO == b"storebox card v1"


@pytest.mark.parametrize("vector", [AES256, A11], ids=["aes256gcm", "rfc-a.1.1"])
def test_vector_recipient_key_derives_from_ikm(vector: dict[str, bytes]) -> None:
    pair = SUITE.kem.derive_key_pair(vector["ikmR"])
    assert pair.private_key.to_private_bytes() == vector["skRm"]
    assert pair.public_key.to_public_bytes() == vector["pkRm"]


def test_rfc_a11_ephemeral_key_derives_from_ikm() -> None:
    pair = SUITE.kem.derive_key_pair(A11["ikmE"])
    assert pair.private_key.to_private_bytes() == A11["skEm"]
    assert pair.public_key.to_public_bytes() == A11["pkEm"]


def test_aes256_vector_opens() -> None:
    sk_r = X25519PrivateKey.from_private_bytes(AES256["skRm"])
    pt = hpke_open(sk_r, AES256["pkEm"], AES256["ct0"], info=V_INFO, aad=V_AAD0)
    assert pt == V_PT


def test_aes256_vector_fails_with_another_aad() -> None:
    sk_r = X25519PrivateKey.from_private_bytes(AES256["skRm"])
    with pytest.raises(OpenError):
        hpke_open(sk_r, AES256["pkEm"], AES256["ct0"], info=V_INFO, aad=b"Count-1")


def test_aes256_vector_seal_reproduces_ct_with_the_vectors_ephemeral_key() -> None:
    pk_r = X25519PublicKey.from_public_bytes(AES256["pkRm"])
    sk_e = X25519PrivateKey.from_private_bytes(AES256["skEm"])
    enc, ct = hpke_seal(pk_r, V_PT, info=V_INFO, aad=V_AAD0, ephemeral=sk_e)
    assert enc == AES256["pkEm"]
    assert ct == AES256["ct0"]


def test_rfc_a11_seal_reproduces_ct_with_the_same_kem_and_kdf() -> None:
    suite = CipherSuite.new(KEMId.DHKEM_X25519_HKDF_SHA256, KDFId.HKDF_SHA256,
                            AEADId.AES128_GCM)
    eks = suite.kem.derive_key_pair(A11["ikmE"])
    pkr = suite.kem.deserialize_public_key(A11["pkRm"])
    enc, ctx = suite.create_sender_context(pkr, info=V_INFO, eks=eks)
    assert enc == A11["pkEm"]
    assert ctx.seal(V_PT, aad=V_AAD0) == A11["ct0"]


# --- another implementation: cryptography's HPKE (wire form enc || ct, no aad) ------------

CRYPTOGRAPHY_SUITE = hpke.Suite(hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_256_GCM)


def test_pyhpke_seal_opens_with_cryptography() -> None:
    sk = X25519PrivateKey.generate()
    enc, ct = hpke_seal(sk.public_key(), card_plaintext(CARD), info=INFO, aad=b"")
    assert CRYPTOGRAPHY_SUITE.decrypt(enc + ct, sk, info=INFO) == card_plaintext(CARD)


def test_cryptography_seal_opens_with_pyhpke() -> None:
    sk = X25519PrivateKey.generate()
    sealed = CRYPTOGRAPHY_SUITE.encrypt(card_plaintext(CARD), sk.public_key(), info=INFO)
    enc, ct = sealed[:32], sealed[32:]
    assert hpke_open(sk, enc, ct, info=INFO, aad=b"") == card_plaintext(CARD)


def test_cryptography_cannot_open_a_card_bound_to_its_payment_id() -> None:
    """The aad is really used: without it (cryptography has no aad) nothing opens."""
    sk = X25519PrivateKey.generate()
    sealed = seal_card(SealKey.from_public_key(sk.public_key()), PAYMENT_ID, CARD)
    with pytest.raises(InvalidTag):
        CRYPTOGRAPHY_SUITE.decrypt(sealed.enc + sealed.ct, sk, info=INFO)


def test_cryptography_with_another_info_cannot_open() -> None:
    sk = X25519PrivateKey.generate()
    enc, ct = hpke_seal(sk.public_key(), b"x", info=INFO, aad=b"")
    with pytest.raises(InvalidTag):
        CRYPTOGRAPHY_SUITE.decrypt(enc + ct, sk, info=b"storebox card v2")


# --- sealing and opening -------------------------------------------------------------------


@pytest.fixture
def keypair() -> tuple[bytes, bytes]:
    return generate_keypair()


@pytest.fixture
def seal_key(keypair: tuple[bytes, bytes]) -> SealKey:
    return SealKey.from_pem(keypair[1])


@pytest.fixture
def opener(keypair: tuple[bytes, bytes]) -> SealOpener:
    return SealOpener.from_pems([keypair[0]])


def test_round_trip(seal_key: SealKey, opener: SealOpener) -> None:
    sealed = seal_card(seal_key, PAYMENT_ID, CARD)
    assert sealed.kid == seal_key.kid
    assert opener.open(PAYMENT_ID, sealed) == {"exp_month": 12, "exp_year": 2028, "pan": PAN}
    card = opener.open_card(PAYMENT_ID, sealed)
    assert (card.pan, card.exp_month, card.exp_year, card.cvc) == (PAN, 12, 2028, None)


def test_plaintext_is_canonical_json_without_cvc() -> None:
    assert card_plaintext(CARD) == b'{"exp_month":12,"exp_year":2028,"pan":"4111111111111111"}'


def test_the_cvc_is_never_sealed(seal_key: SealKey, keypair: tuple[bytes, bytes]) -> None:
    sealed = seal_card(seal_key, PAYMENT_ID, CARD)
    private = serialization.load_pem_private_key(keypair[0], password=None)
    assert isinstance(private, X25519PrivateKey)
    plaintext = hpke_open(private, sealed.enc, sealed.ct, info=INFO,
                          aad=PAYMENT_ID.encode())
    assert b"cvc" not in plaintext and b"123" not in plaintext
    assert len(sealed.ct) == len(card_plaintext(CARD)) + 16


def test_every_seal_is_fresh(seal_key: SealKey) -> None:
    first, second = (seal_card(seal_key, PAYMENT_ID, CARD) for _ in range(2))
    assert first.enc != second.enc
    assert first.ct != second.ct


def test_another_payment_id_fails_authentication(seal_key: SealKey,
                                                 opener: SealOpener) -> None:
    sealed = seal_card(seal_key, PAYMENT_ID, CARD)
    with pytest.raises(SealedCardError) as info:
        opener.open("pay_01HZX3K8", sealed)
    assert info.value.reason == "authentication_failed"
    assert info.value.kid == seal_key.kid


def test_payment_id_is_the_utf8_aad(seal_key: SealKey, keypair: tuple[bytes, bytes],
                                    opener: SealOpener) -> None:
    payment_id = "pay_café"
    sealed = seal_card(seal_key, payment_id, CARD)
    private = serialization.load_pem_private_key(keypair[0], password=None)
    assert isinstance(private, X25519PrivateKey)
    assert hpke_open(private, sealed.enc, sealed.ct, info=INFO,
                     aad=payment_id.encode("utf-8")) == card_plaintext(CARD)
    assert opener.open(payment_id, sealed)["pan"] == PAN


@pytest.mark.parametrize("where", ["ct_first", "ct_last", "enc_first"])
def test_altered_bytes_fail_authentication(seal_key: SealKey, opener: SealOpener,
                                           where: str) -> None:
    sealed = seal_card(seal_key, PAYMENT_ID, CARD)
    field_name, index = where.split("_")
    data = bytearray(getattr(sealed, field_name))
    data[0 if index == "first" else -1] ^= 0x01
    altered = SealedCard(kid=sealed.kid, **{
        "enc": sealed.enc, "ct": sealed.ct, field_name: bytes(data)})
    with pytest.raises(SealedCardError) as info:
        opener.open(PAYMENT_ID, altered)
    assert info.value.reason == "authentication_failed"


def test_low_order_enc_fails_authentication_not_crashes(seal_key: SealKey,
                                                        opener: SealOpener) -> None:
    sealed = seal_card(seal_key, PAYMENT_ID, CARD)
    zero = SealedCard(kid=sealed.kid, enc=bytes(32), ct=sealed.ct)
    with pytest.raises(SealedCardError) as info:
        opener.open(PAYMENT_ID, zero)
    assert info.value.reason == "authentication_failed"


def test_unknown_kid_is_told_apart_from_failed_authentication(seal_key: SealKey) -> None:
    other_private, _ = generate_keypair()
    opener = SealOpener.from_pems([other_private])
    sealed = seal_card(seal_key, PAYMENT_ID, CARD)
    with pytest.raises(SealedCardError) as unknown:
        opener.open(PAYMENT_ID, sealed)
    assert unknown.value.reason == "unknown_kid"
    assert unknown.value.kid == seal_key.kid
    # The same bytes relabelled with the kid the opener holds: a key, but the wrong one.
    (held,) = opener.kids
    relabelled = SealedCard(kid=held, enc=sealed.enc, ct=sealed.ct)
    with pytest.raises(SealedCardError) as wrong:
        opener.open(PAYMENT_ID, relabelled)
    assert wrong.value.reason == "authentication_failed"


def test_opener_holds_several_keys_for_rotation(seal_key: SealKey,
                                                keypair: tuple[bytes, bytes]) -> None:
    new_private, new_public = generate_keypair()
    opener = SealOpener.from_pems([keypair[0], new_private])
    assert opener.kids == {seal_key.kid, SealKey.from_pem(new_public).kid}
    for key in (seal_key, SealKey.from_pem(new_public)):
        assert opener.open(PAYMENT_ID, seal_card(key, PAYMENT_ID, CARD))["pan"] == PAN


def test_empty_payment_id_is_refused(seal_key: SealKey) -> None:
    with pytest.raises(ValueError, match="payment_id"):
        seal_card(seal_key, "", CARD)


@settings(max_examples=25, deadline=None)
@given(pan=st.from_regex(r"[0-9]{12,19}", fullmatch=True),
       month=st.integers(1, 12), year=st.integers(2000, 2199),
       payment_id=st.text(min_size=1, max_size=64))
def test_round_trip_property(pan: str, month: int, year: int, payment_id: str) -> None:
    private = X25519PrivateKey.generate()
    key = SealKey.from_public_key(private.public_key())
    sealed = seal_card(key, payment_id, Card(pan=pan, exp_month=month, exp_year=year))
    again = SealedCard.from_blob(SealedCard.from_json(sealed.to_json()).to_blob())
    assert SealOpener([private]).open(payment_id, again) == {
        "exp_month": month, "exp_year": year, "pan": pan}


# --- the opened plaintext must be a card ------------------------------------------------


@pytest.mark.parametrize("plaintext", [
    b"not json",
    b'["4111111111111111"]',
    b'{"pan":"4111111111111111"}',
    b'{"exp_month":12,"exp_year":2028,"pan":"4111111111111111","cvc":"123"}',
    b'{"exp_month":"12","exp_year":2028,"pan":"4111111111111111"}',
    b'{"exp_month":12,"exp_year":2028,"pan":"41111111111x1111"}',
])
def test_opened_non_card_is_bad_plaintext_and_never_quoted(plaintext: bytes) -> None:
    private = X25519PrivateKey.generate()
    opener = SealOpener([private])
    enc, ct = hpke_seal(private.public_key(), plaintext, info=INFO, aad=PAYMENT_ID.encode())
    (kid,) = opener.kids
    with pytest.raises(SealedCardError) as info:
        opener.open(PAYMENT_ID, SealedCard(kid=kid, enc=enc, ct=ct))
    assert info.value.reason == "bad_plaintext"
    shown = str(info.value).replace(kid, "<kid>")  # the random kid may hold any digits
    assert "4111" not in shown
    assert "123" not in shown


# --- kid -----------------------------------------------------------------------------------


def test_kid_is_first_16_hex_of_sha256_of_the_raw_key() -> None:
    key = SealKey.from_public_key(X25519PublicKey.from_public_bytes(AES256["pkRm"]))
    assert key.kid == "69df8d73e7407153"  # sha256(pkRm of the AES-256-GCM vector)[:16]
    assert key.kid == hashlib.sha256(AES256["pkRm"]).hexdigest()[:16]
    assert key.raw == AES256["pkRm"]


def test_opener_and_seal_key_agree_on_the_kid(keypair: tuple[bytes, bytes]) -> None:
    opener = SealOpener()
    assert opener.add_private_key(keypair[0]) == SealKey.from_pem(keypair[1]).kid


# --- PEM files -----------------------------------------------------------------------------


def test_load_reads_the_public_key_pem(tmp_path: Path, keypair: tuple[bytes, bytes]) -> None:
    path = tmp_path / "gateway_seal.pub"
    path.write_bytes(keypair[1])
    key = SealKey.load(path)
    assert key.source == str(path)
    assert key.to_pem() == keypair[1]
    assert key == SealKey.from_pem(keypair[1])


def test_generate_keypair_is_pkcs8_and_spki(keypair: tuple[bytes, bytes]) -> None:
    private_pem, public_pem = keypair
    assert private_pem.startswith(b"-----BEGIN PRIVATE KEY-----")
    assert public_pem.startswith(b"-----BEGIN PUBLIC KEY-----")
    private = serialization.load_pem_private_key(private_pem, password=None)
    assert isinstance(private, X25519PrivateKey)
    assert SealKey.from_pem(public_pem).raw == private.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _ed25519_public_pem() -> bytes:
    return Ed25519PrivateKey.generate().public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


@pytest.mark.parametrize(("content", "reason"), [
    (None, "no such file"),
    ("dir", "is a directory"),
    (b"", "not a PEM public key"),
    (b"hello\n", "not a PEM public key"),
    (b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n", "not a PEM public key"),
    ("ed25519", "not an X25519 key"),
    ("private", "holds a private key"),
])
def test_bad_seal_key_file_names_the_path(tmp_path: Path, content: bytes | str | None,
                                          reason: str, keypair: tuple[bytes, bytes]) -> None:
    path = tmp_path / "seal 'key'.pem"
    if content == "dir":
        path.mkdir()
    elif content == "ed25519":
        path.write_bytes(_ed25519_public_pem())
    elif content == "private":
        path.write_bytes(keypair[0])
    elif isinstance(content, bytes):
        path.write_bytes(content)
    with pytest.raises(SealKeyError) as info:
        SealKey.load(path)
    assert isinstance(info.value, PaymentsError)
    assert info.value.path == str(path)
    assert reason in info.value.reason
    assert repr(str(path)) in str(info.value)
    assert b"PRIVATE" not in str(info.value).encode()


def test_opener_pem_files(tmp_path: Path, keypair: tuple[bytes, bytes],
                          seal_key: SealKey) -> None:
    good = tmp_path / "seal.key"
    good.write_bytes(keypair[0])
    opener = SealOpener.from_pem_files([good])
    assert opener.kids == {seal_key.kid}
    public = tmp_path / "seal.pub"
    public.write_bytes(keypair[1])
    for path, reason in ((public, "not an unencrypted PEM private key"),
                         (tmp_path / "absent.key", "no such file")):
        with pytest.raises(SealKeyError) as info:
            SealOpener.from_pem_files([good, path])
        assert info.value.path == str(path)
        assert reason in info.value.reason


def test_opener_refuses_a_non_x25519_private_key(tmp_path: Path) -> None:
    pem = Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption())
    path = tmp_path / "ed.key"
    path.write_bytes(pem)
    with pytest.raises(SealKeyError, match="not an X25519 key"):
        SealOpener.from_pem_files([path])


# --- the JSON and blob forms ---------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def test_json_form_is_base64url_without_padding(seal_key: SealKey) -> None:
    sealed = seal_card(seal_key, PAYMENT_ID, CARD)
    doc = sealed.to_json()
    assert set(doc) == {"kid", "enc", "ct"}
    assert doc["kid"] == seal_key.kid
    assert doc["enc"] == _b64(sealed.enc) and "=" not in doc["enc"]
    assert doc["ct"] == _b64(sealed.ct) and "=" not in doc["ct"]
    assert SealedCard.from_json(json.loads(json.dumps(doc))) == sealed


def test_blob_layout_and_round_trip(seal_key: SealKey) -> None:
    sealed = seal_card(seal_key, PAYMENT_ID, CARD)
    blob = sealed.to_blob()
    assert blob[0] == BLOB_VERSION == 1
    assert blob[1:9] == bytes.fromhex(seal_key.kid)
    assert blob[9:41] == sealed.enc
    assert blob[41:] == sealed.ct
    assert SealedCard.from_blob(blob) == sealed
    assert SealedCard.from_blob(memoryview(blob)) == sealed


def _good_json() -> dict[str, object]:
    return {"kid": "69df8d73e7407153", "enc": _b64(bytes(range(32))),
            "ct": _b64(bytes(range(60)))}


@pytest.mark.parametrize(("change", "message"), [
    ("not a dict", "must be an object"),
    ({"kid": None}, "missing field(s): kid"),
    ({"extra": 1}, "unexpected field(s): extra"),
    ({"kid": 7}, "kid must be a string"),
    ({"kid": "69DF8D73E7407153"}, "kid must be 16 lowercase hex"),
    ({"kid": "69df8d73"}, "kid must be 16 lowercase hex"),
    ({"enc": _b64(bytes(range(32))) + "="}, "enc is not base64url without padding"),
    ({"enc": base64.b64encode(b"\xfb" * 32).decode().rstrip("=")}, "enc is not base64url"),
    ({"enc": _b64(bytes(range(32)))[:-1] + "B"}, "enc is not canonical base64url"),
    ({"enc": _b64(bytes(31))}, "enc must be 32 bytes, got 31 bytes"),
    ({"ct": _b64(bytes(16))}, "ct must be 17..1024 bytes, got 16 bytes"),
    ({"ct": _b64(bytes(1025))}, "ct must be 17..1024 bytes"),
    ({"ct": ["x"]}, "ct must be a base64url string, got list"),
])
def test_malformed_json_is_refused_clearly(change: object, message: str) -> None:
    if isinstance(change, dict):
        doc = _good_json()
        for name, value in change.items():
            if value is None:
                del doc[name]
            else:
                doc[name] = value
        obj: object = doc
    else:
        obj = change
    with pytest.raises(SealedCardError) as info:
        SealedCard.from_json(obj)
    assert info.value.reason == "malformed"
    assert message in str(info.value)


@pytest.mark.parametrize(("blob", "message"), [
    (b"", "empty blob"),
    (bytes([2]) + bytes(8 + 32 + 20), "unknown blob version 2"),
    (bytes([1]) + bytes(8 + 32 + 16), "blob too short (57 bytes)"),
    ("text", "blob must be bytes"),
])
def test_malformed_blob_is_refused_clearly(blob: object, message: str) -> None:
    with pytest.raises(SealedCardError) as info:
        SealedCard.from_blob(blob)  # type: ignore[arg-type]
    assert info.value.reason == "malformed"
    assert message in str(info.value)


# --- no PAN anywhere -----------------------------------------------------------------------


def test_no_pan_in_reprs_errors_or_logs(seal_key: SealKey, opener: SealOpener,
                                        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    sealed = seal_card(seal_key, PAYMENT_ID, CARD)
    texts = [repr(sealed), repr(seal_key), repr(opener), str(sealed.to_json())]
    with pytest.raises(SealedCardError) as info:
        opener.open("pay_other", sealed)
    texts.append(str(info.value))
    texts.append(caplog.text)
    for text in texts:
        assert PAN not in text and PAN[-4:] not in text
    assert "enc=<32 bytes>" in repr(sealed)
