"""Incremental AT line framer: bytes in, events out. Pure: no I/O, no clock, no asyncio.

The modem's byte stream (ITU-T V.250 with `ATV1`, as a Quectel EC25 sends it) is cut into
events:

- `Line(text)` — one information line or unsolicited result code. Whether a line answers
  the outstanding command or is a URC is decided one layer up (`hw.modem.channel`).
- `Echo(text)` — the modem echoing a command line we sent (echo is on until `ATE0`).
  Only lines announced with `AtFramer.expect_echo()` are recognised as echoes.
- `Final(kind, text, code, detail)` — a final result code: `OK`, `ERROR`,
  `+CME ERROR: <n|text>`, `+CMS ERROR: <n|text>`, `NO CARRIER`, `BUSY`, `NO ANSWER`,
  `NO DIALTONE`, `CONNECT[ <text>]`, vendor forms such as `COMMAND NOT SUPPORT`.
  A `+CME ERROR:`/`+CMS ERROR:` glued to the end of another line (`+CPIN: +CME ERROR: 10`,
  some firmwares) yields the leading text as its own event, then the `Final`.
- `Prompt()` — the `> ` data prompt (`AT+CMGS`, `AT+QISEND`), which has no line terminator.
- `Garbage(data)` — noise: control bytes (NUL, line noise at power-up), bytes that are
  never part of UTF-8 (0xFF...) or do not form valid UTF-8, or an over-long line.
  Reported, never fatal. Noise *splits* a line and never joins its two sides:
  `+CSQ: 2<NUL><FF>3,99` frames as `+CSQ: 2` and `3,99` (then a parser refuses the
  fragment) instead of the wrong `+CSQ: 23,99`. Valid UTF-8 (an operator name such as
  `Telefónica`) is text.

Lenient finals, as modems really send them: final result codes match case-insensitively
(`ok`, `+cme error: 10`), and an `OK`/`ERROR` glued to the end of an information line
(`+CSQ: 18,99OK`, no terminator between them) yields the line, then the `Final`.

Line terminators: `\\r\\n`, a lone `\\r` (the echo ends with the command's `\\r`) and a lone
`\\n` all end a line; empty lines are skipped, so `\\r\\n` needs no look-ahead. The framer
keeps its state between `feed()` calls, so data split across reads at any byte yields
exactly the same events as the whole stream at once (property-tested).
"""

from __future__ import annotations

import enum
import re
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass

from hw.modem.codes import CME_ERRORS, CMS_ERRORS

__all__ = [
    "CME_ERRORS",
    "CMS_ERRORS",
    "AtFramer",
    "Echo",
    "Event",
    "Final",
    "FinalKind",
    "Garbage",
    "Line",
    "Prompt",
    "parse_final",
    "split_glued_final",
]

CR = 0x0D
LF = 0x0A
TAB = 0x09

#: Bytes that are noise wherever they occur: C0 controls (but TAB, CR, LF), DEL, and the
#: bytes no UTF-8 sequence contains (0xC0, 0xC1, 0xF5..0xFF).
_NOISE: frozenset[int] = frozenset(
    {*range(0x00, 0x20), 0x7F, 0xC0, 0xC1, *range(0xF5, 0x100)} - {TAB, CR, LF})

# printable ASCII, TAB, and well-formed UTF-8 multi-byte sequences (RFC 3629 table)
_TEXT_RUN = re.compile(
    rb"(?:[\t\x20-\x7e]|[\xc2-\xdf][\x80-\xbf]|\xe0[\xa0-\xbf][\x80-\xbf]"
    rb"|[\xe1-\xec\xee\xef][\x80-\xbf]{2}|\xed[\x80-\x9f][\x80-\xbf]"
    rb"|\xf0[\x90-\xbf][\x80-\xbf]{2}|[\xf1-\xf3][\x80-\xbf]{3}|\xf4[\x80-\x8f][\x80-\xbf]{2})+")

#: 3GPP TS 27.007 §9.2 +CME error codes the EC25 reports (numeric, as with `AT+CMEE=1`),
#: with their verbose texts (`AT+CMEE=2`). Used both ways: verbose text -> number here,
#: number -> text in the simulator.
# the 3GPP TS 27.007 §9.2 / TS 27.005 §3.2.5 tables live in `hw.modem.codes`
_CME_BY_TEXT = {text.lower(): code for code, text in CME_ERRORS.items()}
_CMS_BY_TEXT = {text.lower(): code for code, text in CMS_ERRORS.items()}


class FinalKind(enum.Enum):
    """What a final result code says about the command it ends."""

    OK = "OK"
    CONNECT = "CONNECT"
    ERROR = "ERROR"
    CME_ERROR = "+CME ERROR"
    CMS_ERROR = "+CMS ERROR"
    NOT_SUPPORTED = "COMMAND NOT SUPPORT"
    NO_CARRIER = "NO CARRIER"
    BUSY = "BUSY"
    NO_ANSWER = "NO ANSWER"
    NO_DIALTONE = "NO DIALTONE"

    @property
    def success(self) -> bool:
        """`OK` and `CONNECT` end a command successfully; every other final is a failure."""
        return self in (FinalKind.OK, FinalKind.CONNECT)


@dataclass(frozen=True, slots=True)
class Line:
    """An information line or an unsolicited result code, terminator and noise removed."""

    text: str


@dataclass(frozen=True, slots=True)
class Echo:
    """The modem echoing a command line announced with `AtFramer.expect_echo()`."""

    text: str


@dataclass(frozen=True, slots=True)
class Final:
    """A final result code.

    `text` is the whole code as received; `code` the numeric +CME/+CMS error (verbose
    texts mapped to numbers when known); `detail` what follows `+CME ERROR:` /
    `+CMS ERROR:` / `CONNECT `.
    """

    kind: FinalKind
    text: str
    code: int | None = None
    detail: str = ""


@dataclass(frozen=True, slots=True)
class Prompt:
    """The `> ` prompt asking for data (ended with Ctrl-Z, aborted with ESC)."""

    text: str = "> "


@dataclass(frozen=True, slots=True)
class Garbage:
    """Bytes that are not part of any line: non-printable bytes, or an over-long line."""

    data: bytes


Event = Line | Echo | Final | Prompt | Garbage

_SIMPLE_FINALS: Mapping[str, FinalKind] = {
    "OK": FinalKind.OK,
    "ERROR": FinalKind.ERROR,
    "NO CARRIER": FinalKind.NO_CARRIER,
    "BUSY": FinalKind.BUSY,
    "NO ANSWER": FinalKind.NO_ANSWER,
    "NO DIALTONE": FinalKind.NO_DIALTONE,
    "NO DIAL TONE": FinalKind.NO_DIALTONE,
    # vendor variants of "this command does not exist here"
    "COMMAND NOT SUPPORT": FinalKind.NOT_SUPPORTED,
    "COMMAND NOT SUPPORTED": FinalKind.NOT_SUPPORTED,
}

# `+CME ERROR: 10`, `+CME ERROR: SIM not inserted`, also `+CME ERROR 10` (no colon) and the
# form glued to the end of another line. Searched, not matched, to catch the glued form.
_CMX_ERROR = re.compile(r"\+CM([ES]) ERROR(?::\s*|\s+|$)(.*)$", re.IGNORECASE)
_CONNECT = re.compile(r"CONNECT(?: (.*))?$", re.IGNORECASE)
# `+CSQ: 18,99OK`: an information line (`+NAME:`) whose value ends in a digit, a quote or a
# parenthesis, with OK/ERROR glued on (no terminator in between).
_GLUED_FINAL = re.compile(r"(\+[A-Za-z0-9]+:.*?[0-9\")])\s*(OK|ERROR)$", re.IGNORECASE)


def _error_code(text: str, table: Mapping[str, int]) -> int | None:
    text = text.strip()
    if text.isdigit():
        return int(text)
    return table.get(text.lower())


def parse_final(text: str, extra: Mapping[str, FinalKind] | None = None) -> Final | None:
    """The final result code `text` is (whole line, already stripped; case-insensitive),
    or None."""
    kind = _SIMPLE_FINALS.get(text.upper())
    if kind is None and extra:
        kind = extra.get(text) or extra.get(text.upper())
    if kind is not None:
        return Final(kind, text)
    match = _CMX_ERROR.match(text)
    if match:
        return _cmx_final(text, match)
    match = _CONNECT.match(text)
    if match:
        return Final(FinalKind.CONNECT, text, detail=match.group(1) or "")
    return None


def _cmx_final(text: str, match: re.Match[str]) -> Final:
    detail = match.group(2).strip()
    if match.group(1).upper() == "E":
        return Final(FinalKind.CME_ERROR, text, _error_code(detail, _CME_BY_TEXT), detail)
    return Final(FinalKind.CMS_ERROR, text, _error_code(detail, _CMS_BY_TEXT), detail)


class AtFramer:
    """Cuts a modem byte stream into `Event`s; feed it bytes as they arrive.

    `expect_echo(command)` announces a command line about to be sent, so that its echo is
    reported as `Echo` rather than as an information line; up to `echo_memory` announced
    lines are remembered (echo may be off, so an announcement is not always consumed), and
    an echo consumes its announcement and all older ones. `max_line` bounds a line: a
    longer run without terminator is reported as `Garbage` and dropped. `extra_finals`
    adds exact-text final result codes (e.g. `{"SEND OK": FinalKind.OK}`).
    """

    def __init__(
        self,
        *,
        max_line: int = 4096,
        echo_memory: int = 8,
        extra_finals: Mapping[str, FinalKind] | None = None,
    ) -> None:
        if max_line < 8:
            raise ValueError(f"max_line must be at least 8, not {max_line!r}")
        self._max_line = max_line
        self._extra: dict[str, FinalKind] = dict(extra_finals or {})
        self._echoes: deque[str] = deque(maxlen=echo_memory)
        self._raw = bytearray()  # the current fragment (text since a terminator or noise)
        self._junk = bytearray()  # noise bytes not yet reported

    # -- echo bookkeeping ------------------------------------------------------------------
    def expect_echo(self, command: str) -> None:
        """Announce that `command` (without `\\r`) is being sent and may be echoed."""
        self._echoes.append(command.strip())

    def forget_echoes(self) -> None:
        """Drop every announced echo (e.g. after the modem rebooted)."""
        self._echoes.clear()

    @property
    def pending_echoes(self) -> tuple[str, ...]:
        return tuple(self._echoes)

    @property
    def partial(self) -> bytes:
        """Bytes of the current, unterminated line fragment."""
        return bytes(self._raw)

    # -- framing ---------------------------------------------------------------------------
    def feed(self, data: bytes) -> list[Event]:
        """Consume `data`; return the events completed by it, in stream order."""
        out: list[Event] = []
        for byte in data:
            if byte in (CR, LF):
                self._end_fragment(out)
                self._flush_junk(out)
                continue
            if byte in _NOISE:
                self._end_fragment(out)
                self._junk.append(byte)
                continue
            self._flush_junk(out)
            self._raw.append(byte)
            if self._raw == b"> ":
                out.append(Prompt())
                self._raw.clear()
                continue
            if len(self._raw) >= self._max_line:
                out.append(Garbage(bytes(self._raw)))
                self._raw.clear()
        return out

    def flush(self) -> list[Event]:
        """End of stream: frame what is left of an unterminated line."""
        out: list[Event] = []
        self._end_fragment(out)
        self._flush_junk(out)
        return out

    def _flush_junk(self, out: list[Event]) -> None:
        if self._junk:
            out.append(Garbage(bytes(self._junk)))
            self._junk.clear()

    def _end_fragment(self, out: list[Event]) -> None:
        """The text since the last terminator or noise ends: frame its well-formed runs;
        malformed UTF-8 between them is noise that splits them."""
        raw = bytes(self._raw)
        self._raw.clear()
        if not raw:
            return
        position = 0
        for run in _TEXT_RUN.finditer(raw):
            if run.start() > position:
                out.append(Garbage(raw[position:run.start()]))
            line = run.group().decode("utf-8").strip()
            if line:
                self._classify(line, out)
            position = run.end()
        if position < len(raw):
            out.append(Garbage(raw[position:]))

    def _classify(self, line: str, out: list[Event]) -> None:
        echo = self._match_echo(line)
        if echo:
            out.append(Echo(line))
            return
        final = parse_final(line, self._extra)
        if final is not None:
            out.append(final)
            return
        glued_final = split_glued_final(line)
        if glued_final is not None:
            head, tail = glued_final
            out.append(Line(head))
            final = parse_final(tail)
            assert final is not None
            out.append(final)
            return
        glued = _CMX_ERROR.search(line)
        if glued and glued.start() > 0:
            head = line[: glued.start()].strip()
            if head:
                out.append(Echo(head) if self._match_echo(head) else Line(head))
            tail = line[glued.start() :]
            match = _CMX_ERROR.match(tail)
            assert match is not None
            out.append(_cmx_final(tail, match))
            return
        out.append(Line(line))

    def _match_echo(self, line: str) -> bool:
        if not self._echoes or line[:2].upper() != "AT":
            return False
        for index, expected in enumerate(self._echoes):
            if expected == line or expected.upper() == line.upper():
                for _ in range(index + 1):
                    self._echoes.popleft()
                return True
        return False


def split_glued_final(line: str) -> tuple[str, str] | None:
    """`+CSQ: 18,99OK` -> (`+CSQ: 18,99`, `OK`); None for any other line."""
    match = _GLUED_FINAL.fullmatch(line)
    if match is None:
        return None
    return match.group(1).strip(), match.group(2)


def split_unquoted(text: str, sep: str) -> list[str]:
    """`text` cut at every `sep` outside double quotes; the quotes stay in the parts."""
    parts: list[str] = []
    current: list[str] = []
    quoted = False
    for char in text:
        if char == '"':
            quoted = not quoted
        if char == sep and not quoted:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return parts


def split_concatenated(body: str) -> list[str]:
    """`+CSQ;+COPS?` -> [`+CSQ`, `+COPS?`]; `;` inside quotes is kept."""
    return split_unquoted(body, ";")
