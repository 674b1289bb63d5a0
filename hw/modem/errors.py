"""The one exception base of the modem package; every error carries the fields it is about."""

from __future__ import annotations


class ModemError(Exception):
    """Base of every error raised by `hw.modem`."""


class ParseError(ModemError):
    """An information response of `command` could not be parsed.

    `line` is the offending input: the line that failed (less surrounding blanks), or the
    whole response when its shape is wrong; `reason` says what was expected. The message
    names the input with `!r` so control characters stay visible.
    """

    def __init__(self, command: str, line: str, reason: str) -> None:
        self.command = command
        self.line = line
        self.reason = reason
        super().__init__(f"{command}: {reason}: {line!r}")
