"""A secret a key provider is handed as a file: the token's PIN, a systemd credential.

The file must be a regular file (a symlink is refused: ``O_NOFOLLOW``) that group and
other cannot access: a secret every account on the box may read protects nothing.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from payments_cache.errors import KeyProviderError


def read_secret_file(path: Path, provider: str, what: str,
                     limit: int) -> tuple[bytes, os.stat_result]:
    """Up to `limit` bytes of the file, and its status. `KeyProviderError` (of
    `provider`, naming `what` and the path) when it cannot be opened, is not a regular
    file, or lets group/other access it."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        raise KeyProviderError(provider, f"cannot open {what} {str(path)!r}: "
                               f"{exc.strerror}") from exc
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise KeyProviderError(provider, f"{what} {str(path)!r} is not a regular file")
        if st.st_mode & 0o077:
            raise KeyProviderError(provider, f"{what} {str(path)!r} has mode "
                                   f"{stat.S_IMODE(st.st_mode):04o}, which lets group/other "
                                   "access it; expected 0600 or 0400")
        return os.read(fd, limit), st
    finally:
        os.close(fd)
