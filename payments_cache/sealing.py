"""Sealing cards to the gateway's public key (docs/gateway-protocol.md): HPKE, RFC 9180.

Why: a box that approves offline must keep each card until it can forward it. With a
seal key it keeps only a form that *the gateway* can open — the box never holds the
private key, so a stolen box (disk, memory after the fact, backups) yields no card.

The suite is fixed by the contract and not negotiable:

* HPKE base mode, KEM DHKEM(X25519, HKDF-SHA256), KDF HKDF-SHA256, AEAD AES-256-GCM
  (RFC 9180 ids 0x0020 / 0x0001 / 0x0002);
* ``info`` = ``b"storebox card v1"`` (`INFO`), which pins the purpose;
* ``aad`` = the payment id (UTF-8), so a sealed card cannot be moved onto another
  payment: opening it under any other id fails authentication;
* plaintext = the card as canonical JSON (`card_plaintext`), sorted keys, no spaces,
  ``{"exp_month":12,"exp_year":2028,"pan":"…"}`` — never the CVC.

Pieces:

* `SealKey` — the gateway's public key (PEM SubjectPublicKeyInfo), with its `kid`: the
  first 16 hex digits of SHA-256 of the raw 32-byte key, which tells the gateway which
  of its private keys to use (and lets it rotate them);
* `seal_card` → `SealedCard` (kid, enc, ct), with the wire form (`to_json`, base64url
  without padding) and a compact form for SQLite (`to_blob`);
* `SealOpener` — the gateway's side (used by the simulator, and a reference for
  integrators): private keys by kid, `open` → the card dict;
* `hpke_seal` / `hpke_open` — the single-shot HPKE both are built on, exposed so the
  tests can check the suite against RFC 9180's vectors and another implementation;
* `generate_keypair` — for drills and tests.

No PAN is ever logged, put into an exception message or shown by a ``repr``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from pyhpke import AEADId, CipherSuite, KDFId, KEMId, KEMKey, KEMKeyPair, OpenError

from payments_cache.errors import SealedCardError, SealKeyError
from payments_cache.models import Card

__all__ = [
    "BLOB_VERSION",
    "INFO",
    "SUITE",
    "SealKey",
    "SealOpener",
    "SealedCard",
    "card_plaintext",
    "generate_keypair",
    "hpke_open",
    "hpke_seal",
    "seal_card",
]

INFO = b"storebox card v1"
SUITE = CipherSuite.new(KEMId.DHKEM_X25519_HKDF_SHA256, KDFId.HKDF_SHA256, AEADId.AES256_GCM)
"""The one HPKE suite of docs/gateway-protocol.md (stateless; safe to share)."""

BLOB_VERSION = 1
ENC_BYTES = 32          # an X25519 public key
TAG_BYTES = 16          # AES-GCM tag
KID_HEX = 16
MAX_CT_BYTES = 1024     # a card is ~60 bytes; anything far larger is not one of ours

# Reasons carried by SealedCardError (stable: the simulator maps them to error codes).
UNKNOWN_KID = "unknown_kid"
AUTHENTICATION_FAILED = "authentication_failed"
MALFORMED = "malformed"
BAD_PLAINTEXT = "bad_plaintext"

_KID_RE = re.compile(r"[0-9a-f]{16}")
_B64URL_RE = re.compile(r"[A-Za-z0-9_-]*")
_PAN_RE = re.compile(r"[0-9]{12,19}")
_CARD_FIELDS = frozenset({"exp_month", "exp_year", "pan"})
_JSON_FIELDS = frozenset({"kid", "enc", "ct"})


# --------------------------------------------------------------------------- HPKE


def hpke_seal(public_key: X25519PublicKey, plaintext: bytes, *, info: bytes, aad: bytes,
              ephemeral: X25519PrivateKey | None = None) -> tuple[bytes, bytes]:
    """Single-shot HPKE base-mode seal with `SUITE`; returns ``(enc, ct)``.

    `ephemeral` fixes the sender's ephemeral key: only for known-answer tests (RFC 9180
    vectors). Production calls leave it None, so every seal uses a fresh key.
    """
    eks = None
    if ephemeral is not None:
        eks = KEMKeyPair(KEMKey.from_pyca_cryptography_key(ephemeral),
                         KEMKey.from_pyca_cryptography_key(ephemeral.public_key()))
    pkr = KEMKey.from_pyca_cryptography_key(public_key)
    enc, ctx = SUITE.create_sender_context(pkr, info=info, eks=eks)
    return enc, ctx.seal(plaintext, aad=aad)


def hpke_open(private_key: X25519PrivateKey, enc: bytes, ct: bytes, *, info: bytes,
              aad: bytes) -> bytes:
    """Single-shot HPKE base-mode open with `SUITE`.

    Raises `pyhpke.OpenError` when the ciphertext does not authenticate (wrong key,
    info or aad, altered bytes) and ValueError when `enc` is not a usable X25519 key.
    """
    skr = KEMKey.from_pyca_cryptography_key(private_key)
    ctx = SUITE.create_recipient_context(enc, skr, info=info)
    return ctx.open(ct, aad=aad)


# --------------------------------------------------------------------------- keys


def _raw_public(key: X25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def kid_of(key: X25519PublicKey) -> str:
    """The key id of docs/gateway-protocol.md: first 16 hex digits of SHA-256 of the raw key."""
    return hashlib.sha256(_raw_public(key)).hexdigest()[:KID_HEX]


def _read_key_file(path: str | os.PathLike[str]) -> bytes:
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise SealKeyError(os.fspath(path), "no such file") from None
    except IsADirectoryError:
        raise SealKeyError(os.fspath(path), "is a directory") from None
    except OSError as exc:
        raise SealKeyError(os.fspath(path), f"unreadable: {exc.strerror or exc}") from None


@dataclass(frozen=True)
class SealKey:
    """The gateway's X25519 public key, which the box seals cards to.

    `source` is where it came from (a path, or ``"<pem>"``), for error messages.
    """

    public_key: X25519PublicKey = field(repr=False, compare=False)
    kid: str
    source: str = field(default="<pem>", compare=False)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> SealKey:
        """Read a PEM SubjectPublicKeyInfo X25519 key; `SealKeyError` names the path."""
        return cls.from_pem(_read_key_file(path), source=os.fspath(path))

    @classmethod
    def from_pem(cls, data: bytes, *, source: str = "<pem>") -> SealKey:
        """Parse PEM bytes. A *private* key is refused: the box must never hold one."""
        if b"PRIVATE KEY" in data:
            raise SealKeyError(source, "holds a private key; the box needs only the "
                               "gateway's public key (PEM SubjectPublicKeyInfo)")
        try:
            key = serialization.load_pem_public_key(data)
        except (ValueError, TypeError):
            raise SealKeyError(source, "not a PEM public key (SubjectPublicKeyInfo)") from None
        except Exception as exc:  # the backend raises its own types for odd inputs
            raise SealKeyError(source, f"not a PEM public key ({type(exc).__name__})") from None
        if not isinstance(key, X25519PublicKey):
            raise SealKeyError(source, f"not an X25519 key (got {type(key).__name__})")
        return cls.from_public_key(key, source=source)

    @classmethod
    def from_public_key(cls, key: X25519PublicKey, *, source: str = "<key>") -> SealKey:
        return cls(public_key=key, kid=kid_of(key), source=source)

    @property
    def raw(self) -> bytes:
        """The raw 32-byte public key."""
        return _raw_public(self.public_key)

    def to_pem(self) -> bytes:
        return self.public_key.public_bytes(serialization.Encoding.PEM,
                                            serialization.PublicFormat.SubjectPublicKeyInfo)


def generate_keypair() -> tuple[bytes, bytes]:
    """A new gateway key pair for drills and tests: (private PEM PKCS8, public PEM SPKI)."""
    private = X25519PrivateKey.generate()
    private_pem = private.private_bytes(serialization.Encoding.PEM,
                                        serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption())
    public_pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return private_pem, public_pem


# --------------------------------------------------------------------------- sealed form


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64url(value: object, name: str, kid: str | None) -> bytes:
    """Strict base64url without padding; the re-encoding must give `value` back, so
    that equal bytes and equal strings are the same thing (the gateway's idempotency
    check compares bodies as JSON)."""
    if not isinstance(value, str):
        raise SealedCardError(kid, MALFORMED, f"{name} must be a base64url string, "
                              f"got {type(value).__name__}")
    if not _B64URL_RE.fullmatch(value) or len(value) % 4 == 1:
        raise SealedCardError(kid, MALFORMED, f"{name} is not base64url without padding: "
                              f"{value[:24]!r}")
    try:
        data = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    except (binascii.Error, ValueError):
        raise SealedCardError(kid, MALFORMED, f"{name} is not base64url: "
                              f"{value[:24]!r}") from None
    if _b64url(data) != value:
        raise SealedCardError(kid, MALFORMED, f"{name} is not canonical base64url: "
                              f"{value[:24]!r}")
    return data


@dataclass(frozen=True)
class SealedCard:
    """A card sealed to one gateway key: `kid` names the key, `enc` is the HPKE
    encapsulated key (32 bytes), `ct` the AES-256-GCM ciphertext with its tag.

    Blob layout (`to_blob`, version 1; the version implies the suite and ``info``)::

        0x01 | kid (8 bytes: the 16 hex digits as raw bytes) | enc (32) | ct (≥ 17)
    """

    kid: str
    enc: bytes = field(repr=False)
    ct: bytes = field(repr=False)

    def __post_init__(self) -> None:
        kid = self.kid if isinstance(self.kid, str) else None
        if kid is None or not _KID_RE.fullmatch(kid):
            raise SealedCardError(kid, MALFORMED, f"kid must be {KID_HEX} lowercase hex "
                                  f"digits, got {self.kid!r}")
        if not isinstance(self.enc, bytes) or len(self.enc) != ENC_BYTES:
            raise SealedCardError(kid, MALFORMED, f"enc must be {ENC_BYTES} bytes, got "
                                  f"{_describe(self.enc)}")
        if (not isinstance(self.ct, bytes)
                or not TAG_BYTES < len(self.ct) <= MAX_CT_BYTES):
            raise SealedCardError(kid, MALFORMED, f"ct must be {TAG_BYTES + 1}.."
                                  f"{MAX_CT_BYTES} bytes, got {_describe(self.ct)}")

    def __repr__(self) -> str:
        return f"SealedCard(kid={self.kid!r}, enc=<{len(self.enc)} bytes>, " \
               f"ct=<{len(self.ct)} bytes>)"

    def to_json(self) -> dict[str, str]:
        """The wire form of docs/gateway-protocol.md: ``{"kid", "enc", "ct"}``,
        base64url unpadded."""
        return {"kid": self.kid, "enc": _b64url(self.enc), "ct": _b64url(self.ct)}

    @classmethod
    def from_json(cls, obj: object) -> SealedCard:
        """Parse the wire form; `SealedCardError` (reason ``malformed``) says what is wrong."""
        if not isinstance(obj, Mapping):
            raise SealedCardError(None, MALFORMED, "card_sealed must be an object, got "
                                  f"{type(obj).__name__}")
        missing = sorted(_JSON_FIELDS - set(obj))
        extra = sorted(str(k) for k in set(obj) - _JSON_FIELDS)
        kid_value = obj.get("kid")
        kid = kid_value if isinstance(kid_value, str) and _KID_RE.fullmatch(kid_value) else None
        if missing:
            raise SealedCardError(kid, MALFORMED, f"missing field(s): {', '.join(missing)}")
        if extra:
            raise SealedCardError(kid, MALFORMED, f"unexpected field(s): {', '.join(extra)}")
        if not isinstance(kid_value, str):
            raise SealedCardError(None, MALFORMED, "kid must be a string, got "
                                  f"{type(kid_value).__name__}")
        enc = _unb64url(obj["enc"], "enc", kid)
        ct = _unb64url(obj["ct"], "ct", kid)
        return cls(kid=kid_value, enc=enc, ct=ct)

    def to_blob(self) -> bytes:
        """The compact form for SQLite (layout in the class docstring)."""
        return bytes([BLOB_VERSION]) + bytes.fromhex(self.kid) + self.enc + self.ct

    @classmethod
    def from_blob(cls, blob: bytes | bytearray | memoryview) -> SealedCard:
        """Parse `to_blob`'s output; an unknown version or a short blob is ``malformed``."""
        if not isinstance(blob, bytes | bytearray | memoryview):
            raise SealedCardError(None, MALFORMED, f"blob must be bytes, got "
                                  f"{type(blob).__name__}")
        data = bytes(blob)
        if not data:
            raise SealedCardError(None, MALFORMED, "empty blob")
        if data[0] != BLOB_VERSION:
            raise SealedCardError(None, MALFORMED, f"unknown blob version {data[0]!r}")
        kid_end = 1 + KID_HEX // 2
        enc_end = kid_end + ENC_BYTES
        if len(data) <= enc_end + TAG_BYTES:
            raise SealedCardError(None, MALFORMED, f"blob too short ({len(data)} bytes)")
        return cls(kid=data[1:kid_end].hex(), enc=data[kid_end:enc_end], ct=data[enc_end:])


def _describe(value: object) -> str:
    if isinstance(value, bytes):
        return f"{len(value)} bytes"
    return type(value).__name__


# --------------------------------------------------------------------------- sealing


def card_plaintext(card: Card) -> bytes:
    """The canonical JSON the contract seals: PAN and expiry, never the CVC."""
    return json.dumps(card.to_dict(include_cvc=False), sort_keys=True,
                      separators=(",", ":")).encode("ascii")


def _aad(payment_id: str) -> bytes:
    if not isinstance(payment_id, str) or not payment_id:
        raise ValueError("payment_id must be a non-empty string")
    return payment_id.encode("utf-8")


def seal_card(key: SealKey, payment_id: str, card: Card) -> SealedCard:
    """Seal `card` to `key`, bound to `payment_id` (the HPKE aad)."""
    enc, ct = hpke_seal(key.public_key, card_plaintext(card), info=INFO,
                        aad=_aad(payment_id))
    return SealedCard(kid=key.kid, enc=enc, ct=ct)


# --------------------------------------------------------------------------- opening


def _load_private_pem(data: bytes, source: str) -> X25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        raise SealKeyError(source, "not an unencrypted PEM private key (PKCS8)") from None
    except Exception as exc:  # the backend raises its own types for odd inputs
        raise SealKeyError(source, f"not a PEM private key ({type(exc).__name__})") from None
    if not isinstance(key, X25519PrivateKey):
        raise SealKeyError(source, f"not an X25519 key (got {type(key).__name__})")
    return key


def _parse_card(plaintext: bytes, kid: str) -> dict[str, Any]:
    """The opened card dict; the error never quotes the plaintext (it holds the PAN)."""
    try:
        doc = json.loads(plaintext)
    except (ValueError, UnicodeDecodeError):
        raise SealedCardError(kid, BAD_PLAINTEXT, "the opened card is not JSON") from None
    if not isinstance(doc, dict) or set(doc) != _CARD_FIELDS:
        raise SealedCardError(kid, BAD_PLAINTEXT, "the opened card must have exactly "
                              "exp_month, exp_year and pan")
    pan, month, year = doc["pan"], doc["exp_month"], doc["exp_year"]
    if not isinstance(pan, str) or not _PAN_RE.fullmatch(pan):
        raise SealedCardError(kid, BAD_PLAINTEXT, "the opened card's pan is not 12-19 digits")
    for value in (month, year):
        if not isinstance(value, int) or isinstance(value, bool):
            raise SealedCardError(kid, BAD_PLAINTEXT, "the opened card's expiry is not "
                                  "integers")
    return doc


class SealOpener:
    """The gateway's side: X25519 private keys by kid, and `open`.

    Several keys let a gateway rotate: cards sealed to the old key still open while
    boxes move to the new one.
    """

    def __init__(self, private_keys: Iterable[X25519PrivateKey] = ()) -> None:
        self._keys: dict[str, X25519PrivateKey] = {}
        for key in private_keys:
            self.add_private_key(key)

    @classmethod
    def from_pem_files(cls, paths: Iterable[str | os.PathLike[str]]) -> SealOpener:
        opener = cls()
        for path in paths:
            opener.add_private_key(_read_key_file(path), source=os.fspath(path))
        return opener

    @classmethod
    def from_pems(cls, pems: Iterable[bytes]) -> SealOpener:
        opener = cls()
        for pem in pems:
            opener.add_private_key(pem)
        return opener

    def add_private_key(self, key: X25519PrivateKey | bytes, *,
                        source: str = "<pem>") -> str:
        """Add a key (object or PEM PKCS8 bytes); returns its kid."""
        if isinstance(key, bytes):
            key = _load_private_pem(key, source)
        elif not isinstance(key, X25519PrivateKey):
            raise TypeError(f"expected an X25519 private key, got {type(key).__name__}")
        kid = kid_of(key.public_key())
        self._keys[kid] = key
        return kid

    @property
    def kids(self) -> frozenset[str]:
        return frozenset(self._keys)

    def __repr__(self) -> str:
        return f"<SealOpener kids={sorted(self._keys)!r}>"

    def open(self, payment_id: str, sealed: SealedCard) -> dict[str, Any]:
        """The card dict ``{"exp_month", "exp_year", "pan"}`` sealed for `payment_id`.

        `SealedCardError` reasons: ``unknown_kid`` (no key with that kid),
        ``authentication_failed`` (another payment id, another key, altered bytes),
        ``bad_plaintext`` (it opened, but is not a card: a sender bug).
        """
        key = self._keys.get(sealed.kid)
        if key is None:
            raise SealedCardError(sealed.kid, UNKNOWN_KID, "no private key with this kid")
        aad = _aad(payment_id)
        try:
            plaintext = hpke_open(key, sealed.enc, sealed.ct, info=INFO, aad=aad)
        except (OpenError, ValueError):
            raise SealedCardError(sealed.kid, AUTHENTICATION_FAILED,
                                  "does not authenticate for this payment id") from None
        return _parse_card(plaintext, sealed.kid)

    def open_card(self, payment_id: str, sealed: SealedCard) -> Card:
        """`open`, as a `Card` (without CVC: a sealed card never has one)."""
        doc = self.open(payment_id, sealed)
        return Card(pan=doc["pan"], exp_month=doc["exp_month"], exp_year=doc["exp_year"])
