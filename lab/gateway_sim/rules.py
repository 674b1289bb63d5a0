"""The acquirer's decision: the deterministic decline rule (`DeclineRules`) and the
`Acquirer` that applies it to an opened card, with a random auth code on approval."""

from __future__ import annotations

import dataclasses
import random
import string
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from lab.gateway_sim.knobs import known_changes
from lab.gateway_sim.wire import PAN_RE, Authorization, open_card
from payments_cache.cards import luhn_valid
from payments_cache.models import GatewayResult
from payments_cache.sealing import SealOpener

_AUTH_CODE_ALPHABET = string.ascii_uppercase + string.digits


@dataclass(frozen=True)
class DeclineRules:
    """The deterministic decision rule (see the module docstring)."""

    decline_amounts: frozenset[int] = frozenset()
    decline_pans: frozenset[str] = field(default=frozenset(), repr=False)
    check_luhn: bool = True
    check_expiry: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "decline_amounts", frozenset(self.decline_amounts))
        object.__setattr__(self, "decline_pans", frozenset(self.decline_pans))
        for amount in self.decline_amounts:
            if not isinstance(amount, int) or isinstance(amount, bool):
                raise ValueError("decline_amounts must be integers")
        for pan in self.decline_pans:
            if not isinstance(pan, str) or not PAN_RE.fullmatch(pan):
                raise ValueError("decline_pans must be strings of 12-19 digits")
        for name in ("check_luhn", "check_expiry"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be a boolean")

    def to_json(self) -> dict[str, Any]:
        return {
            "decline_amounts": sorted(self.decline_amounts),
            "decline_pans": sorted(_mask(p) for p in self.decline_pans),
            "check_luhn": self.check_luhn,
            "check_expiry": self.check_expiry,
        }

    def merged(self, changes: Mapping[str, Any]) -> DeclineRules:
        values = known_changes(self, changes, "rule")
        for name in ("decline_amounts", "decline_pans"):
            if name in values:
                if not isinstance(values[name], list | tuple | set | frozenset):
                    raise ValueError(f"{name} must be a list")
                values[name] = frozenset(values[name])
        return dataclasses.replace(self, **values)

    def decide(self, pan: str, exp_month: int, exp_year: int, amount: int,
               captured_at: datetime) -> str | None:
        """The decline code, or None to approve."""
        if self.check_luhn and not luhn_valid(pan):
            return "invalid_card"
        if self.check_expiry:
            captured = captured_at if captured_at.tzinfo else captured_at.replace(tzinfo=UTC)
            if (exp_year, exp_month) < (captured.year, captured.month):
                return "expired_card"
        if pan in self.decline_pans:
            return "card_declined"
        if amount in self.decline_amounts:
            return "insufficient_funds"
        return None



def _mask(pan: str) -> str:
    return f"{pan[:6]}{'*' * max(len(pan) - 10, 0)}{pan[-4:]}"



class Acquirer:
    """Opens sealed cards with `opener` and decides by the `rules` in force (replaced by
    the simulator's `set_rules`); auth codes come from the simulator's one `rng`."""

    def __init__(self, rules: DeclineRules, rng: random.Random, opener: SealOpener) -> None:
        self.rules = rules
        self.opener = opener
        self._rng = rng

    def open(self, auth: Authorization) -> Authorization:
        """`auth` with its card opened and checked against its hint (`CardRefused`)."""
        return open_card(self.opener, auth)

    def decide(self, auth: Authorization) -> GatewayResult:
        card = auth.opened
        decline_code = self.rules.decide(card.pan, card.exp_month, card.exp_year,
                                         auth.amount, auth.captured_at)
        if decline_code is None:
            code = "".join(self._rng.choices(_AUTH_CODE_ALPHABET, k=6))
            return GatewayResult(status="approved", auth_code=code)
        return GatewayResult(status="declined", decline_code=decline_code)
