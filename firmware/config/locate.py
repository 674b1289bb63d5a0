"""Find the line on which each key of a TOML document is written.

`tomllib` gives values but no positions; this scanner walks the text once and
maps dotted key paths ("lte.port") and table headers ("lte") to line numbers so
that validation can say ``file:line: key: message``. It understands table
headers, arrays of tables, dotted and quoted keys, and skips the inside of
multi-line strings and arrays.
"""

from __future__ import annotations

import re

_HEADER = re.compile(r"^\s*\[\[?\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")
_PART = r"""(?:[A-Za-z0-9_-]+|"[^"]*"|'[^']*')"""
_KEY = re.compile(rf"^\s*({_PART}(?:\s*\.\s*{_PART})*)\s*=")


def _split_key(raw: str) -> list[str]:
    parts = re.findall(r"""[A-Za-z0-9_-]+|"[^"]*"|'[^']*'""", raw)
    return [p[1:-1] if p[:1] in "\"'" else p for p in parts]


def _open_brackets(value: str) -> int:
    """Net '[' minus ']' in a value, ignoring brackets inside strings and comments."""
    depth = 0
    quote = ""
    for ch in value:
        if quote:
            if ch == quote:
                quote = ""
        elif ch in "\"'":
            quote = ch
        elif ch == "#":
            break
        elif ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
    return depth


def key_lines(text: str) -> dict[str, int]:
    """Map each table ("lte") and key ("lte.port") to the 1-based line it starts on."""
    lines: dict[str, int] = {}
    table: list[str] = []
    in_string = ""
    depth = 0
    for number, line in enumerate(text.splitlines(), start=1):
        if in_string:
            if line.count(in_string) % 2 == 1:
                in_string = ""
            continue
        if depth > 0:
            depth += _open_brackets(line)
            continue
        header = _HEADER.match(line)
        if header and not _KEY.match(line):
            table = _split_key(header.group(1))
            lines.setdefault(".".join(table), number)
            continue
        key = _KEY.match(line)
        if not key:
            continue
        parts = [*table, *_split_key(key.group(1))]
        for end in range(len(table) + 1, len(parts) + 1):
            lines.setdefault(".".join(parts[:end]), number)
        value = line[key.end():]
        for delim in ('"""', "'''"):
            if value.count(delim) % 2 == 1:
                in_string = delim
        if not in_string:
            depth = max(0, _open_brackets(value))
    return lines
