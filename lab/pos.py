"""The shop's card terminals on the LAN: one payment at a time each, every answer kept.

Amounts are lunches, with a few bills over the offline limit (approved online, declined
offline) and a few the issuer declines (`DECLINED_AMOUNT`, the drill's gateway rule).

A terminal posts `POST /v1/payments` with a fresh Idempotency-Key and a random valid
card, waits for the answer (at most `timeout_s`), records it and sleeps until its next
sale. It never retries: in the drill, a request without an answer is a failure to
report, not something to paper over.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp


def random_pan(rng: random.Random) -> str:
    """A random 16-digit Visa-like card number with a valid Luhn check digit."""
    digits = [4] + [rng.randrange(10) for _ in range(14)]
    total = 0
    for i, d in enumerate(reversed(digits)):
        d = d * 2 if i % 2 == 0 else d
        total += d - 9 if d > 9 else d
    return "".join(map(str, digits)) + str((10 - total % 10) % 10)


BIG_SALE = 61_000  # above the box's default offline limit (50,000): declined offline
DECLINED_AMOUNT = 4_400  # the gateway simulator declines it (insufficient funds) in the drill


def sale_amount(rng: random.Random) -> int:
    """A lunch: 3,000..29,900 KRW; now and then a party's bill over the offline limit, or
    a card the issuer declines, so the report shows declines online and offline."""
    roll = rng.random()
    if roll < 0.06:
        return BIG_SALE
    if roll < 0.10:
        return DECLINED_AMOUNT
    return rng.randrange(30, 300) * 100


@dataclass(frozen=True)
class Sale:
    """One POS request and what came of it."""

    key: str
    terminal: str
    phase: str
    amount: int
    started: float  # monotonic
    seconds: float
    http_status: int | None  # None: no answer at all
    answer: dict[str, Any] | None
    error: str | None = None

    @property
    def payment_id(self) -> str | None:
        return str(self.answer["id"]) if self.answer and "id" in self.answer else None

    @property
    def outcome(self) -> str:
        """approved / approved_offline / declined / declined_offline / failed."""
        if self.http_status == 200 and self.answer and "status" in self.answer:
            return str(self.answer["status"])
        return "failed"


@dataclass
class Terminals:
    """`count` terminals selling through the box's API at `url`; over https:// they trust
    exactly the certificate whose SHA-256 is `pin` (hex), as a real POS pins its box."""

    url: str
    token: str
    phase: Callable[[], str]
    count: int = 2
    interval_s: float = 1.0
    timeout_s: float = 10.0
    seed: int = 2021
    sales: list[Sale] = field(default_factory=list)
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    pin: str | None = None

    async def run(self) -> None:
        """Sell until `stop` is set; a sale under way is finished first."""
        timeout = aiohttp.ClientTimeout(total=self.timeout_s)
        connector = aiohttp.TCPConnector(
            ssl=aiohttp.Fingerprint(bytes.fromhex(self.pin)) if self.pin else True)
        async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session, \
                asyncio.TaskGroup() as tg:
            for n in range(self.count):
                tg.create_task(self._terminal(session, n + 1), name=f"pos-{n + 1}")

    async def _terminal(self, session: aiohttp.ClientSession, number: int) -> None:
        rng = random.Random(self.seed * 100 + number)  # noqa: S311 -- test data, reproducible
        # spread the terminals over the interval
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.interval_s * (number - 1) / self.count):
                await self.stop.wait()
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        sequence = 0
        while not self.stop.is_set():
            sequence += 1
            await self.sell(session, f"pos-{number}", f"drill-{number}-{sequence}", rng)
            next_at += self.interval_s
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, next_at - loop.time())):
                    await self.stop.wait()

    async def sell(self, session: aiohttp.ClientSession, terminal: str, key: str,
                   rng: random.Random) -> Sale:
        amount = sale_amount(rng)
        body = {"amount": amount, "currency": "KRW",
                "card": {"pan": random_pan(rng), "exp_month": 12, "exp_year": 2030,
                         "cvc": f"{rng.randrange(1000):03d}"},
                "terminal_id": terminal, "reference": key}
        headers = {"Authorization": f"Bearer {self.token}", "Idempotency-Key": key,
                   "Content-Type": "application/json"}
        phase = self.phase()
        started = time.monotonic()
        status: int | None = None
        answer: dict[str, Any] | None = None
        error: str | None = None
        try:
            async with session.post(f"{self.url}/v1/payments", data=json.dumps(body),
                                    headers=headers) as response:
                status = response.status
                text = await response.text()
            try:
                parsed = json.loads(text)
                answer = parsed if isinstance(parsed, dict) else None
            except ValueError:
                error = f"HTTP {status}: not JSON: {text[:80]!r}"
            if status != 200 and error is None:
                error = f"HTTP {status}: {text[:120]}"
        except TimeoutError:
            error = f"no answer within {self.timeout_s:g} s"
        except (aiohttp.ClientError, OSError) as exc:
            error = f"{type(exc).__name__}: {exc}"
        sale = Sale(key, terminal, phase, amount, started, time.monotonic() - started,
                    status, answer, error)
        self.sales.append(sale)
        return sale
