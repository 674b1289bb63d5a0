"""The "file" provider, for development only: the KEK in a 0600 file beside the database.

It does **not** protect at rest: whoever copies the SD card has the KEK. It exists so a
laptop can run the box, and so databases made before key providers keep opening.

Generations: generation 1 is the file at `path` itself (today's KEK file, so its
legacy headerless blobs unwrap with it); a rotation adds ``<path>.2``, ``<path>.3``...
next to it. The current KEK is the highest generation present; its id is
``file:<generation>``. Retiring overwrites a file with zeros, fsyncs and unlinks it
(secure-ish only: flash wear levelling may keep old copies of the blocks).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import cast

from payments_cache.crypto import (
    KEY_BYTES,
    Kek,
    Purpose,
    _create_kek_file,
    fsync_dir,
    read_kek_bytes,
)
from payments_cache.errors import KeyMaterialError, KeyProviderError
from payments_cache.keyproviders import blob
from payments_cache.keyproviders.software import SoftwareKeks

NAME = "file"
_PREFIX = "file:"


class FileKeyProvider:
    """KEKs in 0600 files: ``path`` (generation 1) and ``path.<n>`` after rotations."""

    name = NAME
    protects_at_rest = False

    def __init__(self, path: str | Path, *, create: bool) -> None:
        self.path = Path(path)
        self._keks = SoftwareKeks(NAME)
        self._legacy: Kek | None = None
        generations = self._generations()
        if not generations and not create:
            raise KeyMaterialError(str(self.path), "KEK file is missing and create=False: "
                                   "refusing to make a new KEK while wrapped keys exist")
        if not generations:
            _create_kek_file(self.path)
            generations = [1]
        for generation in generations:
            self._load(generation)
        self._current = max(generations)

    # the KeyProvider protocol

    def current_kek_id(self) -> str:
        return _kek_id(self._current)

    def wrap(self, key_id: str, purpose: str, raw: bytes) -> bytes:
        return self._keks.wrap(self.current_kek_id(), key_id, purpose, raw)

    def unwrap(self, key_id: str, purpose: str, wrapped: bytes) -> bytes:
        if blob.is_legacy(wrapped):
            return self.legacy_unwrap(key_id, purpose, wrapped)
        return self._keks.unwrap(key_id, purpose, wrapped)

    def wrapped_kek_id(self, wrapped: bytes) -> str | None:
        parsed = blob.parse(wrapped)
        return parsed.kek_id if parsed else None

    def rotate_kek(self) -> str:
        generation = self._current + 1
        _create_kek_file(self._file(generation))
        self._load(generation)
        self._current = generation
        return _kek_id(generation)

    def retire_kek(self, kek_id: str) -> None:
        generation = _generation(kek_id)
        if generation == self._current:
            raise KeyProviderError(NAME, f"KEK {kek_id!r} is current; rotate before retiring it")
        if kek_id not in self._keks.ids():
            raise KeyProviderError(NAME, f"no KEK {kek_id!r} (known: {self._keks.ids()!r})")
        _destroy(self._file(generation))
        self._keks.forget(kek_id)
        if generation == 1:
            self._legacy = None

    def describe(self) -> dict[str, object]:
        return {"name": NAME, "protects_at_rest": False,
                "current_kek_id": self.current_kek_id(), "kek_ids": self._keks.ids(),
                "path": str(self.path)}

    def close(self) -> None:
        self._keks.clear()
        self._legacy = None

    # legacy blobs (before key providers)

    def legacy_unwrap(self, key_id: str, purpose: str, wrapped: bytes) -> bytes:
        """Open a headerless blob made by `crypto.Kek.wrap` with the generation-1 file.

        The store re-wraps what it opens this way, after which generation 1 may be retired.
        """
        if self._legacy is None:
            raise KeyProviderError(NAME, f"{purpose} key {key_id!r} is a legacy blob but the "
                                   f"legacy KEK {str(self.path)!r} is retired or missing")
        if purpose not in ("data", "hmac"):
            raise KeyProviderError(NAME, f"legacy blobs hold 'data' or 'hmac' keys, "
                                   f"not {purpose!r}")
        return self._legacy.unwrap(key_id, cast(Purpose, purpose), wrapped)

    # files

    def _load(self, generation: int) -> None:
        path = self._file(generation)
        key = _read_kek(path)
        self._keks.add(_kek_id(generation), key)
        if generation == 1:
            self._legacy = Kek(key, str(path))

    def _file(self, generation: int) -> Path:
        return self.path if generation == 1 else self.path.with_name(
            f"{self.path.name}.{generation}")

    def _generations(self) -> list[int]:
        found = [1] if self.path.exists() else []
        prefix = self.path.name + "."
        if self.path.parent.is_dir():
            for entry in self.path.parent.iterdir():
                suffix = entry.name[len(prefix):]
                if entry.name.startswith(prefix) and suffix.isdigit() and int(suffix) > 1:
                    found.append(int(suffix))
        return sorted(found)


def _kek_id(generation: int) -> str:
    return f"{_PREFIX}{generation}"


def _generation(kek_id: str) -> int:
    suffix = kek_id.removeprefix(_PREFIX)
    if not kek_id.startswith(_PREFIX) or not suffix.isdigit() or int(suffix) < 1:
        raise KeyProviderError(NAME, f"KEK id {kek_id!r} is not a file KEK id "
                               f"({_PREFIX}<generation>)")
    return int(suffix)


def _read_kek(path: Path) -> bytes:
    """The 32 bytes of a KEK file (`crypto.read_kek_bytes`); missing is a KeyMaterialError."""
    try:
        return read_kek_bytes(path)
    except FileNotFoundError as exc:
        raise KeyMaterialError(str(path), f"cannot open: {exc.strerror}") from exc


def _destroy(path: Path) -> None:
    """Overwrite the key with zeros, fsync, unlink, fsync the directory."""
    fd = os.open(path, os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        os.write(fd, bytes(KEY_BYTES))
        os.fsync(fd)
    finally:
        os.close(fd)
    path.unlink()
    fsync_dir(path.parent)
