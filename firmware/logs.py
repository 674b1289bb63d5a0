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

_PRIORITY = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3,
             logging.CRITICAL: 2}
_DIGIT_RUN = re.compile(r"(?<![\d])(?:\d[ -]?){11,18}\d(?![\d])")
_BEARER = re.compile(r"(?i)(bearer\s+)[^\s\"',]+")


def luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def scrub(text: str) -> str:
    """Mask card-number-like digit runs and bearer tokens in `text`."""
    def mask(match: re.Match[str]) -> str:
        digits = re.sub(r"\D", "", match.group(0))
        if 12 <= len(digits) <= 19 and luhn_ok(digits):
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


def setup_logging(level: str = "info") -> None:
    journal = bool(os.environ.get("JOURNAL_STREAM")) or not sys.stderr.isatty()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(ScrubbingFormatter(journal=journal))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    set_level(level)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


def set_level(level: str) -> None:
    logging.getLogger().setLevel(level.upper())
