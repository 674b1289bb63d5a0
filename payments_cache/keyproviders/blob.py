"""The wrapped-key blob every provider writes, and the associated data that binds it.

Layout (version 1 of the provider format)::

    b"SBKW" | 0x01 | len(kek_id) (1 byte) | kek_id (ASCII) | iv (12) | ciphertext (32) + tag (16)

The header names the KEK so that, after a rotation, old and new blobs unwrap side by
side. The KEK id is also part of the associated data, so editing the header to point at
another KEK makes authentication fail instead of silently trying the wrong key.

A blob of exactly 60 bytes is the **legacy** format written by
`crypto.Kek.wrap` (``nonce (12) | ciphertext (32) + tag (16)``). A headed blob is
never 60 bytes long (at least 4 + 1 + 1 + 1 + 12 + 48 = 67), so the two cannot be
confused.
"""

from __future__ import annotations

from dataclasses import dataclass

MAGIC = b"SBKW"
FORMAT_VERSION = 1
IV_BYTES = 12
TAG_BYTES = 16
RAW_KEY_BYTES = 32
LEGACY_BYTES = IV_BYTES + RAW_KEY_BYTES + TAG_BYTES
MAX_KEK_ID = 255

_AAD_LABEL = b"storebox/kek-wrap/v1"


@dataclass(frozen=True)
class Wrapped:
    """A parsed headed blob."""

    kek_id: str
    iv: bytes
    body: bytes  # ciphertext + tag


def encode(kek_id: str, iv: bytes, body: bytes) -> bytes:
    kid = check_kek_id(kek_id).encode("ascii")
    if len(iv) != IV_BYTES:
        raise ValueError(f"iv must be {IV_BYTES} bytes, got {len(iv)}")
    return MAGIC + bytes([FORMAT_VERSION, len(kid)]) + kid + iv + body


def parse(blob: bytes) -> Wrapped | None:
    """The header and body of a headed blob; None when `blob` has none or is malformed."""
    if not blob.startswith(MAGIC) or len(blob) < len(MAGIC) + 2:
        return None
    version, kid_len = blob[len(MAGIC)], blob[len(MAGIC) + 1]
    start = len(MAGIC) + 2
    end = start + kid_len
    if version != FORMAT_VERSION or kid_len == 0 or len(blob) != end + LEGACY_BYTES:
        return None
    try:
        kek_id = blob[start:end].decode("ascii")
    except UnicodeDecodeError:
        return None
    if not kek_id.isprintable():
        return None
    return Wrapped(kek_id, blob[end:end + IV_BYTES], blob[end + IV_BYTES:])


def is_legacy(blob: bytes) -> bool:
    """True for a headerless blob made by `crypto.Kek.wrap` (decided by length alone: its
    random nonce may start with the magic, and a headed blob is never this long)."""
    return len(blob) == LEGACY_BYTES


def aad(kek_id: str, key_id: str, purpose: str) -> bytes:
    """Associated data: the blob only opens for this KEK, key id and purpose."""
    return _encode_parts(_AAD_LABEL, kek_id.encode(), purpose.encode(), key_id.encode())


def check_kek_id(kek_id: str) -> str:
    if not (0 < len(kek_id) <= MAX_KEK_ID and kek_id.isascii() and kek_id.isprintable()):
        raise ValueError(f"KEK id {kek_id!r} must be 1-{MAX_KEK_ID} printable ASCII characters")
    return kek_id


def check_raw(key_id: str, purpose: str, raw: bytes) -> bytes:
    """Only 32-byte keys are wrapped: the blob length then tells the formats apart."""
    if len(raw) != RAW_KEY_BYTES:
        raise ValueError(f"{purpose} key {key_id!r} has {len(raw)} bytes, "
                         f"expected {RAW_KEY_BYTES}")
    return raw


def _encode_parts(*parts: bytes) -> bytes:
    """Unambiguous concatenation: every part prefixed by its 4-byte length."""
    return b"".join(len(p).to_bytes(4, "big") + p for p in parts)
