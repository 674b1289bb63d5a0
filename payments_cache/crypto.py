"""Envelope encryption of card data (AES-256-GCM) and keyed card fingerprints (HMAC-SHA256).

Three layers:

* the **KEK** (key-encryption key): 32 random bytes in a file of its own, mode 0600,
  never in the database. `load_or_create_kek` creates it atomically when absent and
  refuses a file that group/other may access or whose size is not 32 bytes;
* **data keys** (256-bit, one active at a time) and one **HMAC key**, stored in the
  database only *wrapped*: AES-256-GCM under the KEK with the key id and purpose as
  associated data, so a wrapped key cannot be swapped for another;
* **records**: every field is sealed with a fresh 96-bit random nonce under the active
  data key, with associated data binding the ciphertext to ``(payment id, field name,
  key id)``. Moving a ciphertext to another payment, field or key id fails authentication.

Record blob layout (version 1)::

    0x01 | len(key_id) (1 byte) | key_id (ASCII) | nonce (12) | ciphertext + tag (16)

`KeyRing.decrypt` raises `RecordQuarantined` whenever a blob does not authenticate,
is malformed, or names a key the ring cannot use (unknown, retired or not unwrappable
with this KEK). The ring never raises on construction: keys it cannot unwrap are listed
in `KeyRing.unusable` so that the store can quarantine what depends on them and keep serving.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import secrets
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from payments_cache.errors import KeyMaterialError, RecordQuarantined
from payments_cache.models import Card, PaymentRequest

KEY_BYTES = 32
NONCE_BYTES = 12
BLOB_VERSION = 1

Purpose = Literal["data", "hmac"]
KeyState = Literal["active", "previous", "retired"]

_WRAP_AAD = b"storebox/key-wrap/v1"
_RECORD_AAD = b"storebox/record/v1"


# --- the KEK ---------------------------------------------------------------------------


class Kek:
    """The key-encryption key; wraps and unwraps data and HMAC keys."""

    def __init__(self, key: bytes, path: str) -> None:
        if len(key) != KEY_BYTES:
            raise KeyMaterialError(path, f"KEK must be {KEY_BYTES} bytes, got {len(key)}")
        self._aead = AESGCM(key)
        self.path = path

    def wrap(self, key_id: str, purpose: Purpose, raw: bytes) -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        return nonce + self._aead.encrypt(nonce, raw, _wrap_aad(key_id, purpose))

    def unwrap(self, key_id: str, purpose: Purpose, wrapped: bytes) -> bytes:
        """The raw key; `KeyMaterialError` when this KEK did not wrap it (or it was altered)."""
        nonce, body = wrapped[:NONCE_BYTES], wrapped[NONCE_BYTES:]
        try:
            raw = self._aead.decrypt(nonce, body, _wrap_aad(key_id, purpose))
        except (InvalidTag, ValueError) as exc:
            raise KeyMaterialError(self.path, f"cannot unwrap {purpose} key {key_id!r}: "
                                   "wrong KEK or altered key") from exc
        if len(raw) != KEY_BYTES:
            raise KeyMaterialError(self.path, f"{purpose} key {key_id!r} has {len(raw)} bytes")
        return raw


def _wrap_aad(key_id: str, purpose: str) -> bytes:
    return _encode_parts(_WRAP_AAD, purpose.encode(), key_id.encode())


def load_or_create_kek(path: str | Path) -> Kek:
    """Load the KEK at `path`, creating it (0600, 32 random bytes) when absent."""
    path = Path(path)
    try:
        return _load_kek(path)
    except FileNotFoundError:
        pass
    _create_kek_file(path)
    return _load_kek(path)


def _load_kek(path: Path) -> Kek:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise KeyMaterialError(str(path), f"cannot open: {exc.strerror}") from exc
    try:
        _check_kek_stat(path, os.fstat(fd))
        data = os.read(fd, KEY_BYTES + 1)
    finally:
        os.close(fd)
    if len(data) != KEY_BYTES:
        raise KeyMaterialError(str(path), f"size is {len(data)} bytes, expected {KEY_BYTES}")
    return Kek(data, str(path))


def _check_kek_stat(path: Path, st: os.stat_result) -> None:
    if not stat.S_ISREG(st.st_mode):
        raise KeyMaterialError(str(path), "not a regular file")
    if st.st_mode & 0o077:
        raise KeyMaterialError(str(path), f"mode {stat.S_IMODE(st.st_mode):04o} allows "
                               "group/other access; expected 0600")
    if st.st_size != KEY_BYTES:
        raise KeyMaterialError(str(path), f"size is {st.st_size} bytes, expected {KEY_BYTES}")


def _create_kek_file(path: Path) -> None:
    """Write the key to a temporary file, fsync it, then link it into place atomically.

    `os.link` never replaces an existing file: if another process won the race, its
    KEK stays and ours is discarded. A crash leaves either no KEK or a complete one.
    """
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                 0o600)
    try:
        os.write(fd, secrets.token_bytes(KEY_BYTES))
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        with contextlib.suppress(FileExistsError):
            os.link(tmp, path)
    finally:
        tmp.unlink()
    fsync_dir(path.parent)


def fsync_dir(directory: Path) -> None:
    """Make a directory entry (a newly created file) durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# --- wrapped keys as stored ------------------------------------------------------------


@dataclass(frozen=True)
class KeyRecord:
    """One row of the store's `keys` table. `wrapped` is None once the key is retired."""

    key_id: str
    purpose: Purpose
    state: KeyState
    wrapped: bytes | None
    created_at: int


def new_key_id(purpose: Purpose) -> str:
    return ("dk_" if purpose == "data" else "hk_") + secrets.token_hex(8)


# --- the key ring ----------------------------------------------------------------------


class KeyRing:
    """The unwrapped keys in memory, and every operation that uses them."""

    def __init__(self, kek: Kek, records: Iterable[KeyRecord]) -> None:
        self._kek = kek
        self._keys: dict[str, bytes] = {}
        self._unusable: set[str] = set()
        self.active_data_key_id: str | None = None
        self.hmac_key_id: str | None = None
        for record in records:
            self._load(record)

    def _load(self, record: KeyRecord) -> None:
        if record.state == "retired" or record.wrapped is None:
            return
        try:
            self._keys[record.key_id] = self._kek.unwrap(record.key_id, record.purpose,
                                                         record.wrapped)
        except KeyMaterialError:
            self._unusable.add(record.key_id)
            return
        if record.state == "active" and record.purpose == "data":
            self.active_data_key_id = record.key_id
        elif record.state == "active":
            self.hmac_key_id = record.key_id

    @property
    def unusable(self) -> frozenset[str]:
        """Key ids present in the database that this KEK cannot unwrap."""
        return frozenset(self._unusable)

    def usable(self, key_id: str) -> bool:
        return key_id in self._keys

    # key life cycle

    def generate(self, purpose: Purpose, created_at: int) -> KeyRecord:
        """A new random key, usable at once but not active; persist the record, then
        `activate` it after the transaction that stores it commits."""
        key_id = new_key_id(purpose)
        raw = secrets.token_bytes(KEY_BYTES)
        self._keys[key_id] = raw
        return KeyRecord(key_id, purpose, "active", self._kek.wrap(key_id, purpose, raw),
                         created_at)

    def activate(self, record: KeyRecord) -> None:
        if record.purpose == "data":
            self.active_data_key_id = record.key_id
        else:
            self.hmac_key_id = record.key_id

    def forget(self, key_id: str) -> None:
        """Drop a key from memory (retired, or a generated key whose transaction failed)."""
        self._keys.pop(key_id, None)

    # records

    def encrypt(self, payment_id: str, field: str, plaintext: bytes,
                key_id: str | None = None) -> bytes:
        """Seal `plaintext` for (`payment_id`, `field`) under `key_id` (default: active)."""
        key_id = key_id or self._require(self.active_data_key_id, "data")
        nonce = os.urandom(NONCE_BYTES)
        body = AESGCM(self._keys[key_id]).encrypt(nonce, plaintext,
                                                  _record_aad(payment_id, field, key_id))
        kid = key_id.encode("ascii")
        return bytes([BLOB_VERSION, len(kid)]) + kid + nonce + body

    def decrypt(self, payment_id: str, field: str, blob: bytes) -> bytes:
        """Open a sealed record; `RecordQuarantined` when it does not authenticate."""
        key_id, nonce, body = _parse_blob(payment_id, field, blob)
        key = self._keys.get(key_id)
        if key is None:
            raise RecordQuarantined(payment_id, field, f"data key {key_id!r} is not available")
        try:
            return AESGCM(key).decrypt(nonce, body, _record_aad(payment_id, field, key_id))
        except InvalidTag as exc:
            raise RecordQuarantined(payment_id, field, "authentication failed") from exc

    # keyed hashes

    def fingerprint(self, pan: str) -> str:
        """Keyed HMAC-SHA256 of the PAN: the same card always gives the same value."""
        return self.mac("card-fingerprint", pan.encode("ascii"))

    def mac(self, domain: str, data: bytes) -> str:
        key = self._keys[self._require(self.hmac_key_id, "hmac")]
        return hmac.new(key, _encode_parts(domain.encode(), data), hashlib.sha256).hexdigest()

    def request_hash(self, request: PaymentRequest) -> str:
        return self.mac("payment-request", canonical_request(request))

    @staticmethod
    def _require(key_id: str | None, purpose: str) -> str:
        if key_id is None:
            raise RuntimeError(f"no active {purpose} key in the key ring")
        return key_id


def blob_key_id(blob: bytes) -> str | None:
    """The key id a sealed record names, or None when the blob is malformed."""
    try:
        return _parse_blob("", "", blob)[0]
    except RecordQuarantined:
        return None


def _parse_blob(payment_id: str, field: str, blob: bytes) -> tuple[str, bytes, bytes]:
    if len(blob) < 2 or blob[0] != BLOB_VERSION:
        raise RecordQuarantined(payment_id, field, "malformed ciphertext (version)")
    end = 2 + blob[1]
    if len(blob) < end + NONCE_BYTES + 16:
        raise RecordQuarantined(payment_id, field, "malformed ciphertext (length)")
    try:
        key_id = blob[2:end].decode("ascii")
    except UnicodeDecodeError as exc:
        raise RecordQuarantined(payment_id, field, "malformed ciphertext (key id)") from exc
    return key_id, blob[end:end + NONCE_BYTES], blob[end + NONCE_BYTES:]


def _record_aad(payment_id: str, field: str, key_id: str) -> bytes:
    return _encode_parts(_RECORD_AAD, payment_id.encode(), field.encode(), key_id.encode())


def _encode_parts(*parts: bytes) -> bytes:
    """Unambiguous concatenation: every part prefixed by its 4-byte length."""
    return b"".join(len(p).to_bytes(4, "big") + p for p in parts)


# --- what gets sealed and hashed -------------------------------------------------------


def card_plaintext(card: Card) -> bytes:
    """The sealed card: PAN and expiry. The CVC is deliberately not part of it."""
    return json.dumps({"pan": card.pan, "exp_month": card.exp_month,
                       "exp_year": card.exp_year}, separators=(",", ":")).encode()


def card_from_plaintext(payment_id: str, plaintext: bytes) -> Card:
    try:
        data = json.loads(plaintext)
        return Card(pan=str(data["pan"]), exp_month=int(data["exp_month"]),
                    exp_year=int(data["exp_year"]))
    except (ValueError, KeyError, TypeError) as exc:
        raise RecordQuarantined(payment_id, "card", "sealed card is not valid") from exc


def canonical_request(request: PaymentRequest) -> bytes:
    """The bytes a request hash covers: everything the POS sent **except the CVC**.

    A keyed hash of a 3-4 digit CVC next to the PAN's hash could be brute-forced by
    anyone holding the HMAC key, so the CVC is left out: two requests that differ only
    in CVC count as the same request (a replay returns the first answer; no new charge).
    """
    card = request.card
    return json.dumps({
        "amount": request.amount, "currency": request.currency,
        "card": {"pan": card.pan, "exp_month": card.exp_month, "exp_year": card.exp_year},
        "terminal_id": request.terminal_id, "reference": request.reference,
    }, sort_keys=True, separators=(",", ":")).encode()
