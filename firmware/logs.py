"""Logging to stderr in a journald-friendly form, with secrets scrubbed.

Under systemd (JOURNAL_STREAM set) each line starts with the sd-daemon(3)
priority prefix "<N>" so the journal records the right priority; on a terminal
lines read "LEVEL logger: message". A filter masks anything that looks like a
card number (12-19 digits passing Luhn, with or without separators) and bearer
tokens, as defence in depth: code must not log them in the first place.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import time
from collections.abc import Callable

from firmware.http_limits import SERVER_LOGGER
from payments_cache.cards import luhn_valid

_PRIORITY = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3,
             logging.CRITICAL: 2}
_DIGIT_RUN = re.compile(r"(?<![\d])(?:\d[ -]?){11,18}\d(?![\d])")
_BEARER = re.compile(r"(?i)(bearer\s+)[^\s\"',]+")


def scrub(text: str) -> str:
    """Mask card-number-like digit runs and bearer tokens in `text`."""
    def mask(match: re.Match[str]) -> str:
        digits = re.sub(r"\D", "", match.group(0))
        if 12 <= len(digits) <= 19 and luhn_valid(digits):
            return f"{digits[:6]}…{digits[-4:]}" if len(digits) >= 13 else "[PAN]"
        return match.group(0)
    return _BEARER.sub(r"\1[redacted]", _DIGIT_RUN.sub(mask, text))


class ScrubbingFormatter(logging.Formatter):
    def __init__(self, journal: bool) -> None:
        fmt = "%(name)s: %(message)s" if journal else "%(levelname)-7s %(name)s: %(message)s"
        super().__init__(fmt)
        self.journal = journal

    def format(self, record: logging.LogRecord) -> str:
        text = scrub(super().format(record))
        if self.journal:
            prefix = f"<{_PRIORITY.get(record.levelno, 6)}>"
            return "\n".join(prefix + line for line in text.splitlines())
        return text


#: The loggers aiohttp's server writes request errors to (the API's runner has its own).
SERVER_LOGGERS = ("aiohttp.server", SERVER_LOGGER)


class ServerErrorFilter(logging.Filter):
    """aiohttp's server logs a request it cannot parse, or a handler that failed, at
    ERROR with a traceback whose message quotes the raw request bytes — a CVC among
    them, which the card-number scrub cannot recognise. Such a record becomes one line
    naming the exception's type, no traceback, no bytes; at most one a minute per type,
    with the count of those held back (a LAN host must not be able to fill the journal).
    """

    def __init__(self, window_s: float = 60.0,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self._window_s = window_s
        self._monotonic = monotonic
        self._last: dict[str, float] = {}
        self._held: dict[str, int] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        kind = record.exc_info[1].__class__.__name__ if record.exc_info and \
            record.exc_info[1] is not None else "error"
        now = self._monotonic()
        if now - self._last.get(kind, float("-inf")) < self._window_s:
            self._held[kind] = self._held.get(kind, 0) + 1
            return False
        self._last[kind] = now
        held = self._held.pop(kind, 0)
        record.msg = "a client request failed (%s)%s; details withheld: they may quote card data"
        record.args = (kind, f", {held} more since the last report" if held else "")
        record.exc_info = None
        record.exc_text = None
        record.stack_info = None
        return True


def setup_logging(level: str = "info") -> None:
    journal = bool(os.environ.get("JOURNAL_STREAM")) or not sys.stderr.isatty()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(ScrubbingFormatter(journal=journal))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    set_level(level)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    for name in SERVER_LOGGERS:
        server = logging.getLogger(name)
        if not any(isinstance(f, ServerErrorFilter) for f in server.filters):
            server.addFilter(ServerErrorFilter())


def set_level(level: str) -> None:
    logging.getLogger().setLevel(level.upper())
