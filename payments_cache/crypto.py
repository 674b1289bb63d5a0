"""Envelope encryption of card data (AES-256-GCM) and keyed card fingerprints (HMAC-SHA256).

Three layers:

* the **KEK** (key-encryption key), held by a key provider (`payments_cache.keyproviders`:
  a PKCS#11 token, a systemd credential, or — development only — a 0600 file). The
  `Kek` class below is the file form, also used to read databases of earlier firmware;
* **data keys** (256-bit, one active at a time) and **HMAC keys** (one active, the
  previous one kept while its fingerprints can still matter), stored in the database
  only *wrapped* by the provider, with the key id and purpose as associated data, so a
  wrapped key cannot be swapped for another;
* **records**: every field is sealed with a fresh 96-bit random nonce under the active
  data key, with associated data binding the ciphertext to the payment's id, the field
  name, the key id **and the row's amount, currency, merchant, terminal and creation
  time** (`RecordBinding`): a row edited from 1200 KRW to 1 USD no longer decrypts.

Record blob layouts::

    0x02 | len(key_id) (1 byte) | key_id (ASCII) | nonce (12) | ciphertext + tag (16)
    0x01 | the same; associated data without the row binding (firmware before 0004;
           read only, re-encrypted as 0x02 when the store opens)

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
from typing import Literal, Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from payments_cache.errors import KeyMaterialError, RecordQuarantined
from payments_cache.models import Card, PaymentRequest

KEY_BYTES = 32
NONCE_BYTES = 12
BLOB_VERSION = 2
LEGACY_BLOB_VERSION = 1

Purpose = Literal["data", "hmac"]
KeyState = Literal["active", "previous", "retired"]

_WRAP_AAD = b"storebox/key-wrap/v1"
_RECORD_AAD = b"storebox/record/v1"
_RECORD_AAD_V2 = b"storebox/record/v2"


# --- the KEK ---------------------------------------------------------------------------


class Kek:
    """A key-encryption key held in a file; wraps and unwraps data and HMAC keys.

    It sits on the box's own disk (`protects_at_rest` False): development only, and
    the form earlier firmware used."""

    name = "file"
    protects_at_rest = False

    def __init__(self, key: bytes, path: str) -> None:
        if len(key) != KEY_BYTES:
            raise KeyMaterialError(path, f"KEK must be {KEY_BYTES} bytes, got {len(key)}")
        self._aead = AESGCM(key)
        self.path = path

    def wrap(self, key_id: str, purpose: str, raw: bytes) -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        return nonce + self._aead.encrypt(nonce, raw, _wrap_aad(key_id, purpose))

    def unwrap(self, key_id: str, purpose: str, wrapped: bytes) -> bytes:
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


def load_kek(path: str | Path) -> Kek:
    """Load an existing KEK; `KeyMaterialError` when it is missing (never creates one)."""
    try:
        return _load_kek(Path(path))
    except FileNotFoundError as exc:
        raise KeyMaterialError(str(path), "missing, while the database holds keys wrapped by "
                               "it: restore the file (or mount its filesystem); a new KEK is "
                               "never made in its place") from exc


def _load_kek(path: Path) -> Kek:
    return Kek(read_kek_bytes(path), str(path))


def read_kek_bytes(path: Path) -> bytes:
    """The 32 bytes of a KEK file, refusing symlinks, group/other access and a wrong size
    (`KeyMaterialError`); `FileNotFoundError` when it is missing."""
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
    return data


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


class Wrapper(Protocol):
    """What wraps the database's keys: a key provider, or the legacy file `Kek`."""

    def wrap(self, key_id: str, purpose: str, raw: bytes) -> bytes: ...

    def unwrap(self, key_id: str, purpose: str, wrapped: bytes) -> bytes: ...


@dataclass(frozen=True)
class RecordBinding:
    """The row fields a sealed record is bound to (its associated data)."""

    payment_id: str
    amount: int
    currency: str
    merchant_id: str | None
    terminal_id: str | None
    created_at_ms: int

    def encode(self) -> bytes:
        return _encode_parts(self.payment_id.encode(), str(self.amount).encode(),
                             self.currency.encode(), (self.merchant_id or "").encode(),
                             (self.terminal_id or "").encode(),
                             str(self.created_at_ms).encode())


class KeyRing:
    """The unwrapped keys in memory, and every operation that uses them.

    With `ephemeral_fingerprints` the card fingerprints (velocity rule) use a key made
    at start and never stored: a thief holding the database and its wrapping key still
    cannot test guesses of a card number against them. The price: the velocity rule
    forgets cards across a restart. The store asks for it whenever the key provider
    keeps its key on the box's disk (the development `file` provider).
    """

    def __init__(self, wrapper: Wrapper, records: Iterable[KeyRecord], *,
                 ephemeral_fingerprints: bool = False) -> None:
        self._wrapper = wrapper
        self._keys: dict[str, bytes] = {}
        self._unusable: set[str] = set()
        self.active_data_key_id: str | None = None
        self.hmac_key_id: str | None = None
        self._previous_hmac: list[str] = []
        self._ephemeral = secrets.token_bytes(KEY_BYTES) if ephemeral_fingerprints else None
        for record in records:
            self._load(record)

    def _load(self, record: KeyRecord) -> None:
        if record.state == "retired" or record.wrapped is None:
            return
        try:
            self._keys[record.key_id] = self._wrapper.unwrap(record.key_id, record.purpose,
                                                             record.wrapped)
        except KeyMaterialError:
            self._unusable.add(record.key_id)
            return
        if record.state == "active" and record.purpose == "data":
            self.active_data_key_id = record.key_id
        elif record.state == "active":
            self.hmac_key_id = record.key_id
        elif record.purpose == "hmac":
            self._previous_hmac.append(record.key_id)

    @property
    def unusable(self) -> frozenset[str]:
        """Key ids present in the database that this KEK cannot unwrap."""
        return frozenset(self._unusable)

    @property
    def ephemeral_fingerprints(self) -> bool:
        return self._ephemeral is not None

    def usable(self, key_id: str) -> bool:
        return key_id in self._keys

    # key life cycle

    def generate(self, purpose: Purpose, created_at: int) -> KeyRecord:
        """A new random key, usable at once but not active; persist the record, then
        `activate` it after the transaction that stores it commits."""
        key_id = new_key_id(purpose)
        raw = secrets.token_bytes(KEY_BYTES)
        self._keys[key_id] = raw
        return KeyRecord(key_id, purpose, "active", self._wrapper.wrap(key_id, purpose, raw),
                         created_at)

    def rewrap(self, record: KeyRecord, wrapper: Wrapper) -> KeyRecord:
        """The same key wrapped by `wrapper` (a new KEK); the ring then uses it."""
        raw = self._keys[record.key_id]
        self._wrapper = wrapper
        return KeyRecord(record.key_id, record.purpose, record.state,
                         wrapper.wrap(record.key_id, record.purpose, raw), record.created_at)

    def use_wrapper(self, wrapper: Wrapper) -> None:
        self._wrapper = wrapper

    def activate(self, record: KeyRecord) -> None:
        if record.purpose == "data":
            self.active_data_key_id = record.key_id
            return
        if self.hmac_key_id is not None and self.hmac_key_id != record.key_id:
            self._previous_hmac.insert(0, self.hmac_key_id)
        self.hmac_key_id = record.key_id

    def forget(self, key_id: str) -> None:
        """Drop a key from memory (retired, or a generated key whose transaction failed)."""
        self._keys.pop(key_id, None)
        if key_id in self._previous_hmac:
            self._previous_hmac.remove(key_id)

    # records

    def encrypt(self, binding: RecordBinding, field: str, plaintext: bytes,
                key_id: str | None = None) -> bytes:
        """Seal `plaintext` for `binding`'s row and `field` under `key_id` (default: active)."""
        key_id = key_id or self._require(self.active_data_key_id, "data")
        nonce = os.urandom(NONCE_BYTES)
        body = AESGCM(self._keys[key_id]).encrypt(nonce, plaintext,
                                                  _record_aad_v2(binding, field, key_id))
        kid = key_id.encode("ascii")
        return bytes([BLOB_VERSION, len(kid)]) + kid + nonce + body

    def decrypt(self, binding: RecordBinding, field: str, blob: bytes) -> bytes:
        """Open a sealed record; `RecordQuarantined` when it does not authenticate."""
        payment_id = binding.payment_id
        version, key_id, nonce, body = _parse_blob(payment_id, field, blob)
        key = self._keys.get(key_id)
        if key is None:
            raise RecordQuarantined(payment_id, field, f"data key {key_id!r} is not available")
        aad = (_record_aad_v2(binding, field, key_id) if version == BLOB_VERSION
               else _record_aad(payment_id, field, key_id))
        try:
            return AESGCM(key).decrypt(nonce, body, aad)
        except InvalidTag as exc:
            raise RecordQuarantined(payment_id, field, "authentication failed (altered "
                                    "ciphertext or row, or another key)") from exc

    # keyed hashes

    def fingerprint(self, pan: str) -> str:
        """Keyed HMAC-SHA256 of the PAN under the current fingerprint key."""
        key = self._ephemeral or self._keys[self._require(self.hmac_key_id, "hmac")]
        return _hmac(key, "card-fingerprint", pan.encode("ascii"))

    def fingerprints(self, pan: str) -> list[str]:
        """The PAN's fingerprint under every key a stored fingerprint may be made with
        (the current one first; after a rotation the previous key's until it retires)."""
        if self._ephemeral is not None:
            return [self.fingerprint(pan)]
        ids = [self._require(self.hmac_key_id, "hmac"), *self._previous_hmac]
        return [_hmac(self._keys[k], "card-fingerprint", pan.encode("ascii"))
                for k in ids if k in self._keys]

    def mac(self, domain: str, data: bytes, key_id: str | None = None) -> str:
        """``<hmac key id>:<hex>``: names its key, so it verifies after a rotation."""
        key_id = key_id or self._require(self.hmac_key_id, "hmac")
        return f"{key_id}:{_hmac(self._keys[key_id], domain, data)}"

    def verify_mac(self, domain: str, data: bytes, tag: str | None) -> bool:
        key_id, _, _ = (tag or "").partition(":")
        if key_id not in self._keys:
            return False
        return hmac.compare_digest(self.mac(domain, data, key_id), tag or "")

    @staticmethod
    def _require(key_id: str | None, purpose: str) -> str:
        if key_id is None:
            raise RuntimeError(f"no active {purpose} key in the key ring")
        return key_id


def _hmac(key: bytes, domain: str, data: bytes) -> str:
    return hmac.new(key, _encode_parts(domain.encode(), data), hashlib.sha256).hexdigest()


def blob_key_id(blob: bytes) -> str | None:
    """The key id a sealed record names, or None when the blob is malformed."""
    try:
        return _parse_blob("", "", blob)[1]
    except RecordQuarantined:
        return None


def blob_version(blob: bytes) -> int | None:
    return blob[0] if blob else None


def _parse_blob(payment_id: str, field: str, blob: bytes) -> tuple[int, str, bytes, bytes]:
    if len(blob) < 2 or blob[0] not in (BLOB_VERSION, LEGACY_BLOB_VERSION):
        raise RecordQuarantined(payment_id, field, "malformed ciphertext (version)")
    end = 2 + blob[1]
    if len(blob) < end + NONCE_BYTES + 16:
        raise RecordQuarantined(payment_id, field, "malformed ciphertext (length)")
    try:
        key_id = blob[2:end].decode("ascii")
    except UnicodeDecodeError as exc:
        raise RecordQuarantined(payment_id, field, "malformed ciphertext (key id)") from exc
    return blob[0], key_id, blob[end:end + NONCE_BYTES], blob[end + NONCE_BYTES:]


def _record_aad(payment_id: str, field: str, key_id: str) -> bytes:
    return _encode_parts(_RECORD_AAD, payment_id.encode(), field.encode(), key_id.encode())


def _record_aad_v2(binding: RecordBinding, field: str, key_id: str) -> bytes:
    return _encode_parts(_RECORD_AAD_V2, binding.encode(), field.encode(), key_id.encode())


def _encode_parts(*parts: bytes) -> bytes:
    """Unambiguous concatenation: every part prefixed by its 4-byte length."""
    return b"".join(len(p).to_bytes(4, "big") + p for p in parts)


# --- what gets sealed and hashed -------------------------------------------------------


def card_plaintext(card: Card) -> bytes:
    """The sealed card: PAN and expiry. The CVC is deliberately not part of it."""
    return json.dumps(card.to_dict(include_cvc=False), separators=(",", ":")).encode()


def card_from_plaintext(payment_id: str, plaintext: bytes) -> Card:
    try:
        data = json.loads(plaintext)
        return Card(pan=str(data["pan"]), exp_month=int(data["exp_month"]),
                    exp_year=int(data["exp_year"]))
    except (ValueError, KeyError, TypeError) as exc:
        raise RecordQuarantined(payment_id, "card", "sealed card is not valid") from exc


REQUEST_HASH_PREFIX = "v2:"


def request_hash(request: PaymentRequest) -> str:
    """What `lookup_idempotency` compares to tell a replay from another request.

    It covers everything the POS sent except the CVC and the PAN's middle digits
    (last4 and the PAN's length stand for the card), and is a plain SHA-256: it holds
    nothing a thief could test card-number guesses against, whatever keys he has. Two
    requests under one key that differ only in the middle digits of a card with the
    same last four, expiry, amount and reference count as the same request (the first
    answer is returned; nobody is charged twice).
    """
    return REQUEST_HASH_PREFIX + hashlib.sha256(canonical_request(request)).hexdigest()


def canonical_request(request: PaymentRequest) -> bytes:
    """The bytes `request_hash` covers (see there): no CVC, no PAN beyond its last4."""
    card = request.card
    return json.dumps({
        "amount": request.amount, "currency": request.currency,
        "card": {"last4": card.last4, "pan_length": len(card.pan),
                 "exp_month": card.exp_month, "exp_year": card.exp_year},
        "terminal_id": request.terminal_id, "reference": request.reference,
    }, sort_keys=True, separators=(",", ":")).encode()
