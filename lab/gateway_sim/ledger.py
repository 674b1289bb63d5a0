"""The acquirer's books: every stored authorization (one per payment id), the ones in
progress, and the counters (per payment and in total) behind ``GET /_sim/stats``."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from payments_cache.models import GatewayResult


@dataclass(frozen=True)
class StoredAuthorization:
    """One processed authorization. No PAN: only its last four digits."""

    payment_id: str
    result: GatewayResult
    amount: int
    currency: str
    last4: str
    offline: bool
    merchant_id: str
    processed_at: datetime
    fingerprint: str = field(repr=False)
    seal_kid: str | None = None  # the kid of the card_sealed it came with, if any

    def result_json(self) -> dict[str, Any]:
        return {"payment_id": self.payment_id, "status": self.result.status,
                "auth_code": self.result.auth_code, "decline_code": self.result.decline_code}

    def to_json(self) -> dict[str, Any]:
        return {**self.result_json(), "amount": self.amount, "currency": self.currency,
                "last4": self.last4, "offline": self.offline, "merchant_id": self.merchant_id,
                "processed_at": self.processed_at.isoformat(timespec="milliseconds"),
                "seal_kid": self.seal_kid}


@dataclass
class PaymentCounters:
    """What happened to one payment id."""

    processed: int = 0
    replays: int = 0
    conflicts_422: int = 0
    in_progress_409: int = 0
    dropped_answers: int = 0
    lookups: int = 0

    def to_json(self) -> dict[str, int]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class SimStats:
    """A snapshot of the simulator's accounting (also ``GET /_sim/stats``)."""

    processed: int = 0
    replays: int = 0
    conflicts_422: int = 0
    card_refused_422: int = 0
    in_progress_409: int = 0
    dropped_answers: int = 0
    injected_5xx: int = 0
    injected_429: int = 0
    down_503: int = 0
    refused: int = 0
    unauthorized_401: int = 0
    bad_request_400: int = 0
    lookups: int = 0
    requests: int = 0
    payments: Mapping[str, PaymentCounters] = field(default_factory=dict)

    def processed_count(self, payment_id: str) -> int:
        counters = self.payments.get(payment_id)
        return counters.processed if counters else 0

    def totals(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if f.name != "payments"}

    def to_json(self) -> dict[str, Any]:
        return {"totals": self.totals(),
                "payments": {pid: c.to_json() for pid, c in sorted(self.payments.items())}}



class Ledger:
    """The simulator's state. Exactly once by construction: the routes check `store` and
    `in_progress` and mark a key in progress without an ``await`` in between."""

    def __init__(self) -> None:
        self.store: dict[str, StoredAuthorization] = {}
        self.in_progress: dict[str, str] = {}  # payment id -> fingerprint of its body
        self.counters: dict[str, PaymentCounters] = {}
        self.totals: dict[str, int] = dict.fromkeys(SimStats().totals(), 0)
        self._changed = asyncio.Event()

    def stats(self) -> SimStats:
        """A snapshot of every counter."""
        payments = {pid: dataclasses.replace(c) for pid, c in self.counters.items()}
        return SimStats(**self.totals, payments=payments)

    def processed_count(self, payment_id: str) -> int:
        """How many times `payment_id` was processed: 0 or 1, by construction."""
        counters = self.counters.get(payment_id)
        return counters.processed if counters else 0

    def stored(self, payment_id: str) -> StoredAuthorization | None:
        return self.store.get(payment_id)

    def authorizations(self) -> list[StoredAuthorization]:
        return list(self.store.values())

    def reset(self) -> None:
        """Forget every stored authorization and counter (not the in-progress ones)."""
        self.store.clear()
        self.counters.clear()
        self.totals = dict.fromkeys(self.totals, 0)
        self.notify()

    def count(self, name: str, payment_id: str | None = None) -> None:
        self.totals[name] += 1
        if payment_id is not None:
            counters = self.counters.setdefault(payment_id, PaymentCounters())
            setattr(counters, name, getattr(counters, name) + 1)

    async def wait_until(self, predicate: Callable[[], bool]) -> None:
        while not predicate():
            await self._changed.wait()

    def notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()
