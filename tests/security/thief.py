"""The thief's tools: what someone holding a copy of every file of a stolen box can do
with the project's own code.

`copy_box` takes the files (regular files only: sockets and FIFOs carry nothing at
rest). `loot` then tries everything against the copy:

* **key material on disk**: every ``kek*`` file opens through `FileKeyProvider` (the
  same code the box uses), and every file whose content is 32 bytes (raw, or as hex or
  base64 text) is tried as a KEK under the name any wrapped key in the database gives
  (`SoftwareKeks`, legacy `crypto.Kek`) and as an X25519 private key for sealed cards;
* **the keys table**: each wrapped data and HMAC key is unwrapped with whatever opens
  it (`KeyRing`);
* **card_blob**: decrypted with `CardProtection.open_local` (binding built from the row);
* **card_sealed**: opened with any private key found (`SealOpener`);
* **fingerprints**: every PAN with the row's last4 and brand across a BIN list,
  all 10^6 middles of a 16-digit PAN of which the Luhn digit leaves 10^5, HMAC'd under
  every HMAC key he unwrapped (`_fingerprints`, checked against `crypto._hmac`);
* **grep**: every file for each PAN (ASCII, UTF-16 LE/BE, grouped by four), its middle
  digits ``pan[6:-4]`` (ASCII and UTF-16) and its masked forms (first6 + last4).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import hmac
import os
import shutil
import sqlite3
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from payments_cache.cards import brand as card_brand
from payments_cache.crypto import (
    Kek,
    KeyRecord,
    KeyRing,
    RecordBinding,
    Wrapper,
    _encode_parts,
    _hmac,
)
from payments_cache.database import DB_NAME
from payments_cache.errors import KeyMaterialError, PaymentsError
from payments_cache.keyproviders import blob as blobfmt
from payments_cache.keyproviders.file import FileKeyProvider
from payments_cache.keyproviders.software import SoftwareKeks
from payments_cache.protection import CardProtection
from payments_cache.sealing import SealedCard, SealOpener, kid_of

FINGERPRINT_DOMAIN = "card-fingerprint"


def luhn_complete(partial: str) -> str:
    """`partial` followed by its Luhn check digit."""
    total = 0
    for i, ch in enumerate(reversed(partial)):
        d = int(ch)
        if i % 2 == 0:  # doubled once the check digit is appended
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return partial + str((10 - total % 10) % 10)


# --- taking the files ------------------------------------------------------------------


def copy_box(source: Path, dest: Path) -> list[Path]:
    """Every regular file under `source`, copied to `dest` as it is (bytes, names,
    modes); the copies, sorted."""
    copied = []
    for root, _dirs, files in os.walk(source):
        for name in files:
            path = Path(root) / name
            st = os.lstat(path)
            if not stat.S_ISREG(st.st_mode):
                continue  # sockets, FIFOs: nothing at rest
            target = dest / path.relative_to(source)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target)
            copied.append(target)
    return sorted(copied)


# --- key material ----------------------------------------------------------------------


def key_candidates(files: Iterable[Path]) -> dict[bytes, Path]:
    """Every 32-byte value a file could be: raw content, hex or base64 text."""
    found: dict[bytes, Path] = {}
    for path in files:
        data = path.read_bytes()
        if len(data) > 4096:
            continue  # the database and logs are not a key file
        forms = [data]
        text = data.strip()
        for decode in (binascii.unhexlify, base64.b64decode, base64.urlsafe_b64decode):
            with contextlib.suppress(binascii.Error, ValueError):
                forms.append(decode(text))
        for form in forms:
            if len(form) == 32:
                found.setdefault(form, path)
    return found


class ThiefWrapper:
    """Unwraps with every provider and raw key the thief has; `Wrapper` for `KeyRing`."""

    def __init__(self, providers: Iterable[Wrapper], raw_keys: Iterable[bytes]) -> None:
        self.providers = list(providers)
        self.raw_keys = list(raw_keys)

    def wrap(self, key_id: str, purpose: str, raw: bytes) -> bytes:
        raise NotImplementedError("a thief only reads")

    def unwrap(self, key_id: str, purpose: str, wrapped: bytes) -> bytes:
        for provider in self.providers:
            try:
                return provider.unwrap(key_id, purpose, wrapped)
            except PaymentsError:
                continue
        parsed = blobfmt.parse(wrapped)
        for raw in self.raw_keys:
            try:
                if parsed is not None:
                    keks = SoftwareKeks("thief")
                    keks.add(parsed.kek_id, raw)
                    return keks.unwrap(key_id, purpose, wrapped)
                if blobfmt.is_legacy(wrapped) and purpose in ("data", "hmac"):
                    return Kek(raw, "thief").unwrap(key_id, purpose, wrapped)
            except PaymentsError:
                continue
        raise KeyMaterialError("thief", f"nothing he has opens {purpose} key {key_id!r}")


# --- the loot --------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    id: str
    status: str
    forward_state: str
    brand: str
    last4: str
    first6: str | None
    fingerprint: str | None
    card_blob: bytes | None
    key_id: str | None
    card_sealed: bytes | None
    seal_kid: str | None
    binding: RecordBinding


@dataclass
class Loot:
    """Everything the thief got, and how."""

    files: list[str] = field(default_factory=list)
    kek_files: list[str] = field(default_factory=list)       # opened by FileKeyProvider
    raw_keys: int = 0                                          # 32-byte candidates tried
    private_keys: list[str] = field(default_factory=list)    # X25519 keys matching a kid
    data_keys: list[str] = field(default_factory=list)       # unwrapped data key ids
    hmac_keys: list[str] = field(default_factory=list)       # unwrapped HMAC key ids
    rows: list[Row] = field(default_factory=list)
    blobs: int = 0                                             # rows with card_blob
    sealed: int = 0                                            # rows with card_sealed
    fingerprints: int = 0                                      # rows with a fingerprint
    first6: list[str] = field(default_factory=list)          # non-NULL first6 values
    decrypted: dict[str, str] = field(default_factory=dict)  # payment id -> PAN
    unsealed: dict[str, str] = field(default_factory=dict)   # payment id -> PAN
    brute_forced: dict[str, str] = field(default_factory=dict)  # payment id -> PAN
    hmacs: int = 0                                             # fingerprint guesses made
    grep_hits: list[str] = field(default_factory=list)       # "file: what"

    @property
    def pans(self) -> set[str]:
        return {*self.decrypted.values(), *self.unsealed.values(), *self.brute_forced.values()}


def read_rows(db: Path) -> list[Row]:
    conn = sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True)
    conn.row_factory = sqlite3.Row
    try:
        rows = conn.execute(
            "SELECT id, status, forward_state, brand, last4, first6, fingerprint, "
            "CAST(card_blob AS BLOB) AS card_blob, key_id, "
            "CAST(card_sealed AS BLOB) AS card_sealed, seal_kid, amount, currency, "
            "merchant_id, terminal_id, created_at FROM payments ORDER BY created_at").fetchall()
    finally:
        conn.close()
    return [Row(r["id"], r["status"], r["forward_state"], r["brand"], r["last4"], r["first6"],
                r["fingerprint"], r["card_blob"], r["key_id"], r["card_sealed"], r["seal_kid"],
                RecordBinding(r["id"], r["amount"], r["currency"], r["merchant_id"],
                              r["terminal_id"], r["created_at"]))
            for r in rows]


def read_keys(db: Path) -> list[KeyRecord]:
    conn = sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True)
    try:
        rows = conn.execute("SELECT key_id, purpose, state, wrapped, created_at FROM keys")
        return [KeyRecord(*r) for r in rows.fetchall()]
    finally:
        conn.close()


def loot(copy: Path, files: list[Path], bins: Iterable[str], needles: dict[str, str], *,
         extra_providers: Iterable[Wrapper] = (), extra_private_pems: Iterable[bytes] = ()
         ) -> Loot:
    """Attack the copy. `needles`: PAN -> a label, for the grep. `extra_providers` and
    `extra_private_pems` are for the control runs (what the owner of the hardware or the
    gateway could do with the same tools); a thief has neither."""
    got = Loot(files=[str(f.relative_to(copy)) for f in files])
    dbs = [f for f in files if f.name == DB_NAME]
    assert len(dbs) == 1, f"expected one database in the copy, found {dbs}"
    db = dbs[0]

    providers: list[Wrapper] = list(extra_providers)
    for path in files:
        if path.name.startswith("kek") and "." not in path.name.removeprefix("kek.key"):
            try:
                providers.append(FileKeyProvider(path, create=False))
                got.kek_files.append(str(path.relative_to(copy)))
            except PaymentsError:
                pass
    candidates = key_candidates(files)
    got.raw_keys = len(candidates)
    wrapper = ThiefWrapper(providers, candidates)

    records = read_keys(db)
    ring = KeyRing(wrapper, records)
    got.data_keys = sorted(r.key_id for r in records if r.purpose == "data"
                           and ring.usable(r.key_id))
    hmac_keys: list[bytes] = []
    for record in records:
        if record.purpose != "hmac" or record.wrapped is None:
            continue
        try:
            hmac_keys.append(wrapper.unwrap(record.key_id, "hmac", record.wrapped))
            got.hmac_keys.append(record.key_id)
        except PaymentsError:
            pass

    got.rows = read_rows(db)
    kids = {r.seal_kid for r in got.rows if r.seal_kid}
    opener = SealOpener.from_pems(extra_private_pems)
    for raw, path in candidates.items():
        key = X25519PrivateKey.from_private_bytes(raw)
        if kid_of(key.public_key()) in kids:
            opener.add_private_key(key)
            got.private_keys.append(str(path.relative_to(copy)))
    for path in files:
        data = path.read_bytes()
        if b"PRIVATE KEY-----" in data:
            try:
                opener.add_private_key(data, source=str(path))
                got.private_keys.append(str(path.relative_to(copy)))
            except (PaymentsError, ValueError, TypeError):
                pass

    protection = CardProtection(ring)
    for row in got.rows:
        if row.first6 is not None:
            got.first6.append(row.first6)
        if row.card_blob is not None:
            got.blobs += 1
            try:
                card = protection.open_local(row.binding, row.card_blob, row.key_id)
                got.decrypted[row.id] = card.pan
            except PaymentsError:
                pass
        if row.card_sealed is not None:
            got.sealed += 1
            try:
                card = opener.open_card(row.id, SealedCard.from_blob(row.card_sealed))
                got.unsealed[row.id] = card.pan
            except PaymentsError:
                pass
    brute_force(got, hmac_keys, list(bins))
    got.grep_hits = grep(copy, files, needles)
    return got


# --- fingerprints ----------------------------------------------------------------------


def _fingerprints(key: bytes, pans: Iterable[str]) -> Iterator[tuple[str, str]]:
    """(PAN, fingerprint) as `KeyRing.fingerprint` makes it, with the HMAC's prefix
    (domain and length) absorbed once."""
    prefix = _encode_parts(FINGERPRINT_DOMAIN.encode(), b"0" * 16)[:-16]
    base = hmac.new(key, prefix, hashlib.sha256)
    for pan in pans:
        h = base.copy()
        h.update(pan.encode())
        yield pan, h.hexdigest()


def brute_force(got: Loot, keys: list[bytes], bins: list[str]) -> None:
    targets: dict[tuple[str, str], dict[str, str]] = {}  # (last4, brand) -> fp -> id
    for row in got.rows:
        if row.fingerprint is not None:
            got.fingerprints += 1
            targets.setdefault((row.last4, row.brand), {})[row.fingerprint] = row.id
    for key in keys:
        sample = bins[0] + "0" * 10
        assert next(_fingerprints(key, [sample]))[1] == _hmac(
            key, FINGERPRINT_DOMAIN, sample.encode()), "the fast path is not the product's HMAC"
        for (last4, brand), wanted in targets.items():
            for bin6 in bins:
                if card_brand(bin6 + "0" * 10) != brand:
                    continue
                for pan, fp in _fingerprints(key, _luhn_pans(bin6, last4)):
                    got.hmacs += 1
                    if fp in wanted:
                        got.brute_forced[wanted[fp]] = pan


_TABLE: list[int] | None = None


def _luhn_pans(bin6: str, last4: str) -> Iterator[str]:
    """Every Luhn-valid 16-digit PAN with this BIN and last4 (10^5 of the 10^6 middles).

    Digits are weighed from the right (check digit = index 0); odd indices are doubled.
    In ``bin6 | m0..m5 | last4`` the middle digit m_k sits at index 9 - k: m0, m2, m4 are
    doubled, m1, m3, m5 are not. m5 is solved for from the others."""
    global _TABLE
    if _TABLE is None:
        _TABLE = [_weigh(f"{m:05d}") for m in range(100_000)]
    fixed = _luhn_sum(bin6 + "000000" + last4)
    for m, contribution in enumerate(_TABLE):
        m5 = (-(fixed + contribution)) % 10
        yield f"{bin6}{m:05d}{m5}{last4}"


def _weigh(five: str) -> int:
    total = 0
    for k, ch in enumerate(five):
        d = int(ch)
        if k % 2 == 0:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total


def _luhn_sum(pan: str) -> int:
    total = 0
    for i, ch in enumerate(reversed(pan)):
        d = ord(ch) - 48
        if i % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total


# --- grep ------------------------------------------------------------------------------


def needle_forms(pan: str) -> dict[str, bytes]:
    middle = pan[6:-4]
    grouped = " ".join(pan[i:i + 4] for i in range(0, len(pan), 4))
    forms: dict[str, bytes] = {}
    for label, text in (("PAN", pan), ("PAN grouped", grouped),
                        ("PAN dashed", grouped.replace(" ", "-")), ("middle digits", middle),
                        ("first6…last4", f"{pan[:6]}…{pan[-4:]}"),
                        ("first6*last4", f"{pan[:6]}{'*' * (len(pan) - 10)}{pan[-4:]}")):
        forms[label] = text.encode()
        forms[f"{label} (UTF-16LE)"] = text.encode("utf-16-le")
        forms[f"{label} (UTF-16BE)"] = text.encode("utf-16-be")
    return forms


def grep(copy: Path, files: list[Path], needles: dict[str, str]) -> list[str]:
    hits = []
    forms = {pan: needle_forms(pan) for pan in needles}
    for path in files:
        data = path.read_bytes()
        for pan, label in needles.items():
            for what, form in forms[pan].items():
                if form in data:
                    hits.append(f"{path.relative_to(copy)}: {what} of {label}")
    return hits
