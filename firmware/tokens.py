"""Bearer tokens from `api.tokens_file`, compared in constant time."""

from __future__ import annotations

import hmac
import logging
import os
import stat
from pathlib import Path

log = logging.getLogger("storebox.tokens")


class TokenStore:
    """Holds the accepted tokens; `reload()` re-reads the file (SIGHUP)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._tokens: list[bytes] = []
        self.reload()

    def reload(self) -> int:
        try:
            mode = os.stat(self.path).st_mode
            text = Path(self.path).read_text(encoding="utf-8")
        except OSError as exc:
            log.error("cannot read tokens_file %r: %s; every API request will get 401",
                      self.path, exc.strerror)
            self._tokens = []
            return 0
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            log.warning("tokens_file %r is readable by others (mode %o); it should be 0600",
                        self.path, stat.S_IMODE(mode))
        tokens = [line.strip() for line in text.splitlines()]
        self._tokens = [t.encode() for t in tokens if t and not t.startswith("#")]
        if not self._tokens:
            log.error("tokens_file %r holds no token; every API request will get 401", self.path)
        return len(self._tokens)

    def __len__(self) -> int:
        return len(self._tokens)

    def check(self, presented: str) -> bool:
        """True when `presented` is one of the tokens; every token is compared, in constant time."""
        candidate = presented.encode()
        found = False
        for token in self._tokens:
            found |= hmac.compare_digest(candidate, token)
        return found
