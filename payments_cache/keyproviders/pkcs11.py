"""The "pkcs11" provider: the KEK is a non-extractable AES-256 key inside a token.

On the Pi the token is the ATECC608 or the TPM behind a PKCS#11 module; in tests it is
SoftHSM2. The KEK is generated *on* the token with ``CKA_SENSITIVE`` true and
``CKA_EXTRACTABLE`` false, so its value never exists outside it: wrapping and unwrapping
are ``C_Encrypt`` / ``C_Decrypt`` with ``CKM_AES_GCM`` (random 12-byte IV, the blob's
associated data). A stolen SD card holds only wrapped keys, and the token stays in the box.

Keys are labelled ``<key_label>-<n>``; the current KEK is the highest ``n`` present and its
id is ``pkcs11:<key_label>-<n>``. Rotation generates ``n + 1``; retiring destroys the
object. A key with one of our labels that is extractable or not sensitive is refused.

The user PIN is read from a file that group/other may not access (0600 or stricter).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pkcs11
from pkcs11.constants import Attribute, ObjectClass
from pkcs11.exceptions import (
    NoSuchKey,
    NoSuchToken,
    PKCS11Error,
)
from pkcs11.mechanisms import GCMParams, KeyType, Mechanism
from pkcs11.types import DecryptMixin, EncryptMixin, Object, Token

from payments_cache.errors import KeyProviderError
from payments_cache.keyproviders import blob, pkcs11_session
from payments_cache.keyproviders.secret_file import read_secret_file
from payments_cache.keyproviders.software import require_header, unwrap_failed

NAME = "pkcs11"
_PREFIX = "pkcs11:"
_TAG_BITS = blob.TAG_BYTES * 8


@dataclass(frozen=True)
class _TokenKek:
    """A KEK object on the token, with the operations it was checked to allow."""

    obj: Object
    encryptor: EncryptMixin
    decryptor: DecryptMixin


class Pkcs11KeyProvider:
    """KEKs as token objects ``<key_label>-<n>``, used through the process's session."""

    name = NAME
    protects_at_rest = True

    def __init__(self, module: str, token_label: str, pin_file: str | Path, key_label: str,
                 *, create: bool) -> None:
        self.module = module
        self.token_label = token_label
        self.pin_file = Path(pin_file)
        self.key_label = key_label
        self._closed = False
        self._token = _find_token(module, token_label)
        self._shared = pkcs11_session.acquire(module, self._token, read_pin(self.pin_file))
        self._lock = self._shared.lock
        self._session = self._shared.session
        try:
            self._keys = self._find_keys()
            if not self._keys and not create:
                raise KeyProviderError(NAME, f"no KEK labelled {key_label + '-<n>'!r} on token "
                                       f"{token_label!r} and create=False: refusing to make a "
                                       "new KEK while wrapped keys exist")
            if not self._keys:
                self._generate(1)
        except BaseException:
            pkcs11_session.release(module, token_label)
            raise

    # the KeyProvider protocol

    def current_kek_id(self) -> str:
        return self._kek_id(self._current())

    def wrap(self, key_id: str, purpose: str, raw: bytes) -> bytes:
        blob.check_raw(key_id, purpose, raw)
        generation = self._current()
        kek_id = self._kek_id(generation)
        iv = os.urandom(blob.IV_BYTES)
        params = GCMParams(iv, blob.aad(kek_id, key_id, purpose), _TAG_BITS)
        with self._lock:
            try:
                body = self._keys[generation].encryptor.encrypt(
                    raw, mechanism=Mechanism.AES_GCM, mechanism_param=params)
            except PKCS11Error as exc:
                raise KeyProviderError(NAME, f"token {self.token_label!r} cannot wrap "
                                       f"{purpose} key {key_id!r}: {exc!r}") from exc
        return blob.encode(kek_id, iv, _whole(body))

    def unwrap(self, key_id: str, purpose: str, wrapped: bytes) -> bytes:
        parsed = require_header(NAME, key_id, purpose, wrapped)
        generation = self._generation_of(parsed.kek_id)
        if generation not in self._keys and not self._closed:
            self._keys = self._find_keys()  # rotated by another process since we opened
        key = self._keys.get(generation)
        if key is None:
            raise KeyProviderError(NAME, f"KEK {parsed.kek_id!r} is not on token "
                                   f"{self.token_label!r} (retired or another box's)")
        params = GCMParams(parsed.iv, blob.aad(parsed.kek_id, key_id, purpose), _TAG_BITS)
        with self._lock:
            try:
                raw = key.decryptor.decrypt(parsed.body, mechanism=Mechanism.AES_GCM,
                                            mechanism_param=params)
            except PKCS11Error as exc:
                raise unwrap_failed(NAME, key_id, purpose, parsed.kek_id) from exc
        return blob.check_raw(key_id, purpose, _whole(raw))

    def wrapped_kek_id(self, wrapped: bytes) -> str | None:
        parsed = blob.parse(wrapped)
        return parsed.kek_id if parsed else None

    def rotate_kek(self) -> str:
        generation = self._current() + 1
        self._generate(generation)
        return self._kek_id(generation)

    def retire_kek(self, kek_id: str) -> None:
        generation = self._generation_of(kek_id)
        if generation == self._current():
            raise KeyProviderError(NAME, f"KEK {kek_id!r} is current; rotate before retiring it")
        key = self._keys.get(generation)
        if key is None:
            raise KeyProviderError(NAME, f"no KEK {kek_id!r} on token {self.token_label!r}")
        with self._lock:
            key.obj.destroy()
        del self._keys[generation]

    def describe(self) -> dict[str, object]:
        return {"name": NAME, "protects_at_rest": True,
                "current_kek_id": self.current_kek_id(),
                "kek_ids": [self._kek_id(g) for g in sorted(self._keys)],
                "module": self.module, "token_label": self.token_label,
                "token_manufacturer": self._token.manufacturer_id,
                "token_model": self._token.model, "key_label": self.key_label}

    def close(self) -> None:
        """Log out and close the session; a second call does nothing."""
        if self._closed:
            return
        self._closed = True
        self._keys = {}
        pkcs11_session.release(self.module, self.token_label)

    # token objects

    def _current(self) -> int:
        if self._closed:
            raise KeyProviderError(NAME, f"provider for token {self.token_label!r} is closed")
        return max(self._keys)

    def _find_keys(self) -> dict[int, _TokenKek]:
        keys: dict[int, _TokenKek] = {}
        with self._lock:
            # a list: the search must be finished before a refusal closes the session
            found = list(self._session.get_objects({Attribute.CLASS: ObjectClass.SECRET_KEY}))
            for obj in found:
                label = str(obj[Attribute.LABEL])
                generation = self._label_generation(label)
                if generation is not None and generation in keys:
                    raise KeyProviderError(NAME, f"two KEKs labelled {label!r} on token "
                                           f"{self.token_label!r} (concurrent rotations?); "
                                           "destroy the one no wrapped key names")
                if generation is not None:
                    keys[generation] = _checked(obj, label)
        return keys

    def _generate(self, generation: int) -> None:
        label = self._label(generation)
        template = {Attribute.TOKEN: True, Attribute.PRIVATE: True,
                    Attribute.SENSITIVE: True, Attribute.EXTRACTABLE: False,
                    Attribute.ENCRYPT: True, Attribute.DECRYPT: True,
                    Attribute.WRAP: False, Attribute.UNWRAP: False}
        with self._lock:
            try:
                key = self._session.generate_key(KeyType.AES, 256, label=label, store=True,
                                                 template=template)
            except PKCS11Error as exc:
                raise KeyProviderError(NAME, f"cannot create KEK {label!r} on token "
                                       f"{self.token_label!r}: {exc!r}") from exc
        self._keys[generation] = _checked(key, label)

    def _label(self, generation: int) -> str:
        return f"{self.key_label}-{generation}"

    def _kek_id(self, generation: int) -> str:
        return _PREFIX + self._label(generation)

    def _label_generation(self, label: str) -> int | None:
        suffix = label.removeprefix(self.key_label + "-")
        if label.startswith(self.key_label + "-") and suffix.isdigit() and int(suffix) > 0:
            return int(suffix)
        return None

    def _generation_of(self, kek_id: str) -> int:
        generation = self._label_generation(kek_id.removeprefix(_PREFIX))
        if not kek_id.startswith(_PREFIX) or generation is None:
            raise KeyProviderError(NAME, f"KEK id {kek_id!r} is not one of this provider's "
                                   f"({_PREFIX}{self.key_label}-<n>)")
        return generation


def read_pin(path: Path) -> str:
    """The user PIN, from a file group/other may not access; one trailing newline allowed."""
    data, _ = read_secret_file(path, NAME, "PIN file", 4096)
    pin = data.decode("utf-8", errors="strict").removesuffix("\n")
    if not pin:
        raise KeyProviderError(NAME, f"PIN file {str(path)!r} is empty")
    return pin


def _find_token(module: str, token_label: str) -> Token:
    try:
        lib = pkcs11.lib(module)
    except PKCS11Error as exc:
        raise KeyProviderError(NAME, f"cannot load PKCS#11 module {module!r}: {exc}") from exc
    try:
        return lib.get_token(token_label=token_label)
    except NoSuchToken as exc:
        raise KeyProviderError(NAME, f"no token labelled {token_label!r} in module "
                               f"{module!r}") from exc
    except PKCS11Error as exc:
        raise KeyProviderError(NAME, f"token {token_label!r} in module {module!r}: "
                               f"{exc!r}") from exc


def _checked(key: Object, label: str) -> _TokenKek:
    """Refuse a KEK whose value could leave the token."""
    try:
        sensitive = bool(key[Attribute.SENSITIVE])
        extractable = bool(key[Attribute.EXTRACTABLE])
    except (NoSuchKey, PKCS11Error) as exc:
        raise KeyProviderError(NAME, f"cannot read the attributes of KEK {label!r}: "
                               f"{exc!r}") from exc
    if not sensitive or extractable:
        raise KeyProviderError(NAME, f"KEK {label!r} is extractable={extractable} "
                               f"sensitive={sensitive}; a KEK must never leave the token")
    if not isinstance(key, EncryptMixin) or not isinstance(key, DecryptMixin):
        raise KeyProviderError(NAME, f"KEK {label!r} does not allow encrypt and decrypt")
    return _TokenKek(key, key, key)


def _whole(data: bytes | Iterator[bytes]) -> bytes:
    """One-shot C_Encrypt/C_Decrypt return bytes (the iterator form is for streamed input)."""
    return data if isinstance(data, bytes) else b"".join(data)
