"""One command's exchange with the modem: what its answer may look like and when it is
complete — the vocabulary `hw.modem.channel.AtChannel` pairs commands with answers in.

`response_prefixes` says which information lines a command claims (`AT+CSQ` ->
`+CSQ:`); `Pending` is the command on the wire, its claims and its inbox, which the
reader fills and which decides synchronously when the answer is complete; `Response`
is the answer. `redact` keeps PINs and PUKs out of everything but the wire.
"""

from __future__ import annotations

import asyncio
import re
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from hw.modem.errors import PortClosed
from hw.modem.framing import Final, Line, Prompt, split_concatenated

__all__ = [
    "CTRL_Z",
    "ESC",
    "SELF_TERMINATING",
    "SYNC_QUERIES",
    "Item",
    "Outcome",
    "Pending",
    "Reboot",
    "Response",
    "line_prefix",
    "redact",
    "response_prefixes",
]

_SECRET_ARGS = re.compile(r"(?i)^(AT\+(?:CPIN2?|CLCK|CPWD|QPINC|CPINR)=)(.*)$")


def redact(command: str) -> str:
    """`command` fit for logs, statistics and error messages: PINs and PUKs replaced.

    ``AT+CPIN="1234"`` becomes ``AT+CPIN=<redacted>``; other commands are unchanged."""
    return _SECRET_ARGS.sub(r"\1<redacted>", command)


#: Commands whose information line may be the whole answer (no final result code), with
#: the prefix of that line: a Wavecom's `+CPIN: READY` (see the module doc).
SELF_TERMINATING: Mapping[str, str] = {"AT+CPIN?": "+CPIN:"}

#: Marker queries for resync, each with the prefix of its distinctive answer line.
SYNC_QUERIES: tuple[tuple[str, str], ...] = (
    ("AT+CMEE?", "+CMEE:"),
    ("AT+CSCS?", "+CSCS:"),
    ("AT+CFUN?", "+CFUN:"),
)

Outcome = Literal["ok", "error", "timeout", "rebooted", "closed", "cancelled"]

#: answers a `> ` prompt when there is no payload; ends a payload
ESC = b"\x1b"
CTRL_Z = b"\x1a"
_EXT_NAME = re.compile(r"\s*([+$%^#*!][A-Za-z0-9_]+)")


def response_prefixes(command: str) -> frozenset[str]:
    """The information-line prefixes `command` may answer with (`AT+CSQ` -> `+CSQ:`)."""
    body = command.strip()[2:]
    prefixes = set()
    for part in split_concatenated(body):
        match = _EXT_NAME.match(part)
        if match:
            prefixes.add(match.group(1).upper() + ":")
    return frozenset(prefixes)


def line_prefix(line: str) -> str | None:
    """`+CEREG: 1` -> `+CEREG:`; None for lines without an extended-command prefix."""
    match = _EXT_NAME.match(line)
    if match and line[match.end() : match.end() + 1] == ":":
        return match.group(1).upper() + ":"
    return None


@dataclass(frozen=True, slots=True)
class Response:
    """The answer to one command: its information lines and final result code."""

    command: str
    lines: tuple[str, ...]
    final: str
    duration_s: float
    implied_final: bool = False

    def values(self, prefix: str) -> list[str]:
        """The text after `prefix` on each line that starts with it (`+CSQ:` -> `20,99`)."""
        return [line[len(prefix) :].strip() for line in self.lines if line.startswith(prefix)]

    def value(self, prefix: str) -> str | None:
        """The first of `values(prefix)`, or None."""
        found = self.values(prefix)
        return found[0] if found else None


class Reboot:
    """The modem announced a reboot (`line`, e.g. `RDY`) while a command was out."""

    def __init__(self, line: str) -> None:
        self.line = line


Item = Line | Final | Prompt | Reboot | PortClosed


class Pending:
    """The command on the wire: routing claims for its lines, and its inbox.

    The reader decides synchronously when the answer is complete (a final result code;
    for a resync query only one after its `marker` line) and detaches the pending at once,
    so that a URC in the same read right after the final is not claimed by a finished
    command.
    """

    def __init__(self, command: str, prefixes: frozenset[str], marker: str | None = None) -> None:
        self.command = command
        self.prefixes = prefixes
        self.marker = marker
        self.marker_seen = False
        self._inbox: deque[Item] = deque()
        self._pushed = asyncio.Event()

    def claims(self, line: str) -> bool:
        return any(line.startswith(p) for p in self.prefixes)

    def completed_by(self, item: Item) -> bool:
        """Whether `item`, pushed by the reader, ends this exchange."""
        if isinstance(item, Line):
            if self.marker is not None and item.text.startswith(self.marker):
                self.marker_seen = True
            return False
        if isinstance(item, Final):
            return self.marker is None or self.marker_seen
        if isinstance(item, Reboot):
            return self.marker is None  # a resync goes on until its marker is answered
        return isinstance(item, PortClosed)

    def push(self, item: Item) -> None:
        self._inbox.append(item)
        self._pushed.set()

    async def next(self) -> Item:
        while not self._inbox:
            self._pushed.clear()
            await self._pushed.wait()
        return self._inbox.popleft()
