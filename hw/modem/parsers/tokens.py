"""Tokenising helpers for AT information responses, shared by every parser module
(`registration`, `signal`, `identity`, `pdp`, `clock`, `radio` and the vendor modules):
lines, `prefix:` payloads, comma-separated fields with quotes remembered, integer and
hexadecimal fields that name the bad value in their `ParseError`.
"""

from __future__ import annotations

import re
from typing import Final, NamedTuple

from hw.modem.errors import ParseError

# --- tokenising helpers (shared with the vendor modules) --------------------------------


class Field(NamedTuple):
    """One comma-separated field of a response: its text without quotes or surrounding
    blanks, and whether it was written as a quoted string."""

    text: str
    quoted: bool


def response_lines(text: str) -> list[str]:
    """The non-empty lines of a response, stripped (CR, LF and CRLF all separate lines)."""
    return [line.strip() for line in re.split(r"[\r\n]+", text) if line.strip()]


def single_line(text: str, command: str) -> str:
    """The only line of a one-line response; anything else is a `ParseError`."""
    lines = response_lines(text)
    if len(lines) != 1:
        raise ParseError(command, text, f"expected exactly one line, got {len(lines)}")
    return lines[0]


def payload(line: str, prefix: str, command: str | None = None) -> str:
    """What follows `prefix` and its colon (`+CSQ: 21,99` -> `21,99`), case-insensitively.

    Blanks around the colon are optional (`+CREG:002,001` is real)."""
    match = re.match(rf"\s*{re.escape(prefix)}\s*:\s*", line, re.IGNORECASE)
    if match is None:
        raise ParseError(command or prefix, line, f"expected a {prefix}: line")
    return line[match.end():].strip()


def split_fields(text: str, command: str, line: str | None = None) -> list[Field]:
    """Split on commas outside double quotes; quotes are removed and remembered."""
    fields: list[Field] = []
    buf: list[str] = []
    in_quotes = False
    quoted = False
    for ch in text:
        if ch == '"':
            in_quotes = not in_quotes
            quoted = True
        elif ch == "," and not in_quotes:
            fields.append(Field("".join(buf).strip(), quoted))
            buf, quoted = [], False
        else:
            buf.append(ch)
    if in_quotes:
        raise ParseError(command, line if line is not None else text, "unterminated quote")
    fields.append(Field("".join(buf).strip(), quoted))
    return fields


def line_fields(text: str, prefix: str) -> tuple[str, list[Field]]:
    """The only line of a one-line `prefix:` response and its fields (how most parsers
    start)."""
    line = single_line(text, prefix)
    return line, split_fields(payload(line, prefix), prefix, line)


def int_fields(text: str, prefix: str, *names: str) -> tuple[str, list[int]]:
    """The only line of a one-line `prefix:` response and its integer fields, exactly one
    per name (`"<rssi>", "<ber>"`); `ParseError` saying which fields were expected, or
    naming the one that is not an integer."""
    line, fields = line_fields(text, prefix)
    if len(fields) != len(names):
        raise ParseError(prefix, line, f"expected {','.join(names)}")
    return line, [to_int(f.text, prefix, line, name) for f, name in zip(fields, names, strict=True)]


INT_RE: Final = re.compile(r"[+-]?\d+")
HEX_RE: Final = re.compile(r"(?:0[xX])?([0-9A-Fa-f]+)")


def to_int(value: str, command: str, line: str, what: str) -> int:
    """A decimal integer field, or `ParseError` naming `what` and the line."""
    if INT_RE.fullmatch(value.strip()) is None:
        raise ParseError(command, line, f"{what} is not an integer ({value!r})")
    return int(value)


def to_hex(value: str, command: str, line: str, what: str) -> int:
    """A hexadecimal field (quoted or not, optional `0x`), or `ParseError`."""
    match = HEX_RE.fullmatch(value.strip())
    if match is None:
        raise ParseError(command, line, f"{what} is not hexadecimal ({value!r})")
    return int(match.group(1), 16)


def optional_int(value: str, command: str, line: str, what: str) -> int | None:
    """An integer field that may be empty or `-` (Quectel's "not available")."""
    value = value.strip()
    if value in ("", "-"):
        return None
    return to_int(value, command, line, what)


def optional_hex(value: str, command: str, line: str, what: str) -> int | None:
    """A hexadecimal field that may be empty or `-`."""
    value = value.strip()
    if value in ("", "-"):
        return None
    return to_hex(value, command, line, what)
