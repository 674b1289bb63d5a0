"""What every key provider offers: wrapping data and HMAC keys under a KEK it keeps.

Threat model: the box's SD card is stolen (or copied). With the KEK in a file beside
the database (the "file" provider) the thief holds every card. The "pkcs11" provider
keeps the KEK inside a token (ATECC608 / TPM) that never releases it; "systemd-creds"
keeps it encrypted on disk under the TPM, decrypted by systemd only into a ramfs only
the service can read. Only "file" has ``protects_at_rest = False``.

Every provider writes the same versioned blob (see `blob`), which names the KEK that
made it, so several KEKs can be usable at once while a rotation re-wraps the keys.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable


@runtime_checkable
class KeyProvider(Protocol):
    """Holds one or more KEKs; wraps and unwraps 32-byte keys under them."""

    name: str
    protects_at_rest: bool

    def current_kek_id(self) -> str:
        """The id of the KEK new wraps use, e.g. ``"pkcs11:storebox-kek-2"``."""
        ...

    def wrap(self, key_id: str, purpose: str, raw: bytes) -> bytes:
        """`raw` sealed under the current KEK, bound to (kek id, `key_id`, `purpose`)."""
        ...

    def unwrap(self, key_id: str, purpose: str, wrapped: bytes) -> bytes:
        """The raw key; `KeyMaterialError` for an unknown KEK, a wrong key or an alteration."""
        ...

    def wrapped_kek_id(self, wrapped: bytes) -> str | None:
        """The KEK id a blob names; None when it has no header (legacy) or is malformed."""
        ...

    def rotate_kek(self) -> str:
        """Make a new KEK current, keep the old ones usable; the new id."""
        ...

    def retire_kek(self, kek_id: str) -> None:
        """Destroy an old KEK once nothing is wrapped under it any more."""
        ...

    def describe(self) -> dict[str, object]:
        """For the status JSON: names, labels and ids only, never key material or PINs."""
        ...

    def close(self) -> None:
        """Release sessions and forget keys held in memory."""
        ...
