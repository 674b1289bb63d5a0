"""Changing a frozen table of simulator knobs (`Faults`, `DeclineRules`) by field name, as
`set_faults`/`set_rules` and the ``/_sim/*`` admin endpoints do: a name the table does not
have is refused with the names, rather than left to `dataclasses.replace`'s TypeError."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

__all__ = ["known_changes"]


def known_changes(table: Any, changes: Mapping[str, Any], noun: str) -> dict[str, Any]:
    """A copy of `changes` for the dataclass instance `table`; ValueError naming every
    unknown field, e.g. "unknown fault(s): a, b" for the `noun` "fault"."""
    known = {f.name for f in dataclasses.fields(table)}
    unknown = sorted(set(changes) - known)
    if unknown:
        raise ValueError(f"unknown {noun}(s): {', '.join(unknown)}")
    return dict(changes)
