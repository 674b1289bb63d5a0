"""`where` filters (`--where KEY=VALUE`, `?where=KEY=VALUE`): which boxes or incidents a
view lists and which boxes a command job reaches."""

from __future__ import annotations

import json
from typing import Any


def matches(row: dict[str, Any], where: list[tuple[str, str]]) -> bool:
    """`KEY=VALUE` filters; a dotted key reaches into objects (`wired.state=down`)."""
    for key, wanted in where:
        value: Any = row
        for part in key.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        text = json.dumps(value) if isinstance(value, bool) or value is None else str(value)
        if text != wanted and str(value) != wanted:
            return False
    return True


def parse_where(values: list[str]) -> list[tuple[str, str]]:
    out = []
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--where {item!r}: expected KEY=VALUE")
        out.append((key, value))
    return out
