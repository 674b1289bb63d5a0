"""Where the store's key-encryption key comes from, and the way off the old KEK file.

`Store.open` is handed a `KeySource`: a KEK file path (development, and every test
that does not care) or a factory ``create -> Wrapper`` — in the daemon a key provider
(`payments_cache.keyproviders`: PKCS#11 token, systemd credential, file). The factory
is told whether it may *create* a KEK: only while the database holds no wrapped key,
so a KEK that went missing (a filesystem not mounted at boot) is never silently
replaced by a new one that cannot open the queue.

Databases of firmware before key providers had their keys wrapped by ``state_dir/kek``,
beside the database. When that file is still there and the configured provider is
another one, the store unwraps with the old file, re-wraps every key with the provider
(`rewrapping`) and then erases the file (`erase_file`).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from payments_cache.crypto import Kek, Wrapper, fsync_dir, load_kek, load_or_create_kek
from payments_cache.errors import KeyMaterialError

log = logging.getLogger(__name__)

#: A KEK file path, or a factory that opens the wrapper (may it create a KEK?).
KeySource = str | Path | Callable[[bool], Wrapper]


class RotatingWrapper(Wrapper, Protocol):
    """A wrapper whose KEK can be replaced (a key provider)."""

    def wrapped_kek_id(self, wrapped: bytes) -> str | None: ...

    def rotate_kek(self) -> str: ...

    def retire_kek(self, kek_id: str) -> None: ...


def open_wrapper(keys: KeySource, *, create: bool) -> Wrapper:
    if isinstance(keys, str | Path):
        return load_or_create_kek(keys) if create else load_kek(Path(keys))
    return keys(create)


def protects_at_rest(wrapper: Wrapper) -> bool:
    """False for a KEK that sits on the box's own disk (a file)."""
    return bool(getattr(wrapper, "protects_at_rest", False))


def load_legacy_kek(path: str | Path | None, current: Wrapper) -> Kek | None:
    """The old KEK file when it exists and is not the current wrapper's own file."""
    if path is None or not Path(path).exists():
        return None
    if isinstance(current, Kek) and Path(current.path).resolve() == Path(path).resolve():
        return None
    return load_kek(Path(path))


class _Rewrapping:
    """Wraps with the current KEK; unwraps with it, or else with the legacy one."""

    def __init__(self, current: Wrapper, legacy: Kek) -> None:
        self._current = current
        self._legacy = legacy

    def wrap(self, key_id: str, purpose: str, raw: bytes) -> bytes:
        return self._current.wrap(key_id, purpose, raw)

    def unwrap(self, key_id: str, purpose: str, wrapped: bytes) -> bytes:
        try:
            return self._current.unwrap(key_id, purpose, wrapped)
        except KeyMaterialError:
            return self._legacy.unwrap(key_id, purpose, wrapped)


def rewrapping(current: Wrapper, legacy: Kek | None) -> Wrapper:
    return current if legacy is None else _Rewrapping(current, legacy)


def erase_file(path: Path) -> None:
    """Overwrite a key file with zeros, fsync, unlink, fsync the directory.

    On flash the overwrite is best effort (wear levelling may keep the old block); it
    still stops the file being read back through the filesystem or a plain image."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return
    try:
        os.write(fd, b"\0" * max(os.fstat(fd).st_size, 1))
        os.fsync(fd)
    finally:
        os.close(fd)
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    fsync_dir(path.parent)
