"""AES-256-GCM wrapping in this process, for providers whose KEK reaches memory.

The "file" and "systemd-creds" providers both end up with the 32 KEK bytes in RAM
(the difference is where they rest: a plain file on the SD card versus a TPM-sealed
credential). This module is the wrapping they share; "pkcs11" does the same on the token.
"""

from __future__ import annotations

import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from payments_cache.errors import KeyProviderError
from payments_cache.keyproviders import blob


class SoftwareKeks:
    """KEKs by id, held in memory, used through the versioned blob format."""

    def __init__(self, provider: str) -> None:
        self._provider = provider
        self._keks: dict[str, AESGCM] = {}

    def add(self, kek_id: str, key: bytes) -> None:
        if len(key) != blob.RAW_KEY_BYTES:
            raise KeyProviderError(self._provider, f"KEK {kek_id!r} has {len(key)} bytes, "
                                   f"expected {blob.RAW_KEY_BYTES}")
        self._keks[blob.check_kek_id(kek_id)] = AESGCM(key)

    def forget(self, kek_id: str) -> None:
        self._keks.pop(kek_id, None)

    def clear(self) -> None:
        self._keks.clear()

    def ids(self) -> list[str]:
        return sorted(self._keks)

    def wrap(self, kek_id: str, key_id: str, purpose: str, raw: bytes) -> bytes:
        blob.check_raw(key_id, purpose, raw)
        iv = os.urandom(blob.IV_BYTES)
        body = self._get(kek_id).encrypt(iv, raw, blob.aad(kek_id, key_id, purpose))
        return blob.encode(kek_id, iv, body)

    def unwrap(self, key_id: str, purpose: str, wrapped: bytes) -> bytes:
        parsed = require_header(self._provider, key_id, purpose, wrapped)
        try:
            raw = self._get(parsed.kek_id).decrypt(
                parsed.iv, parsed.body, blob.aad(parsed.kek_id, key_id, purpose))
        except InvalidTag as exc:
            raise unwrap_failed(self._provider, key_id, purpose, parsed.kek_id) from exc
        return blob.check_raw(key_id, purpose, raw)

    def _get(self, kek_id: str) -> AESGCM:
        try:
            return self._keks[kek_id]
        except KeyError:
            raise KeyProviderError(self._provider, f"KEK {kek_id!r} is not available "
                                   f"(known: {self.ids()!r})") from None


def require_header(provider: str, key_id: str, purpose: str, wrapped: bytes) -> blob.Wrapped:
    """The parsed header, or the error saying why there is none."""
    parsed = blob.parse(wrapped)
    if parsed is not None:
        return parsed
    if blob.is_legacy(wrapped):
        raise KeyProviderError(provider, f"{purpose} key {key_id!r} is in the legacy "
                               "headerless format; only the 'file' provider with the legacy "
                               "KEK file can unwrap it")
    raise KeyProviderError(provider, f"{purpose} key {key_id!r}: malformed wrapped blob "
                           f"({len(wrapped)} bytes)")


def unwrap_failed(provider: str, key_id: str, purpose: str, kek_id: str) -> KeyProviderError:
    return KeyProviderError(provider, f"cannot unwrap {purpose} key {key_id!r} under KEK "
                            f"{kek_id!r}: wrong KEK or altered key")
