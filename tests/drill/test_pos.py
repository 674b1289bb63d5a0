"""The drill's POS terminals against a real HTTP server: every answer, and every non-answer."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web

from lab.pos import BIG_SALE, DECLINED_AMOUNT, Terminals, random_pan, sale_amount
from payments_cache.cards import luhn_valid

MODES: dict[str, str] = {}


async def payments(request: web.Request) -> web.StreamResponse:
    key = request.headers["Idempotency-Key"]
    body = await request.json()
    assert request.headers["Authorization"] == "Bearer tok"
    mode = MODES.get(key, "approve")
    if mode == "slow":
        await asyncio.sleep(1)
    if mode == "503":
        return web.json_response({"error": {"code": "storage_unavailable"}}, status=503)
    if mode == "garbage":
        return web.Response(text="<html>oops</html>")
    return web.json_response({"id": f"pay_{key}", "status": "approved", "mode": "online",
                              "amount": body["amount"]})


@pytest.fixture
async def server() -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_post("/v1/payments", payments)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


@pytest.mark.parametrize(("mode", "outcome", "error"), [
    ("approve", "approved", None),
    ("503", "failed", "HTTP 503"),
    ("garbage", "failed", "not JSON"),
    ("slow", "failed", "no answer within 0.3 s"),
])
async def test_a_sale_records_what_came_back(server: str, mode: str, outcome: str,
                                             error: str | None) -> None:
    MODES[f"k-{mode}"] = mode
    pos = Terminals(server, "tok", phase=lambda: "normal", timeout_s=0.3)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=0.3)) as session:
        sale = await pos.sell(session, "pos-1", f"k-{mode}", random.Random(1))
    assert sale.outcome == outcome
    assert sale.phase == "normal" and sale.terminal == "pos-1"
    if error is None:
        assert sale.error is None and sale.payment_id == f"pay_k-{mode}"
    else:
        assert sale.error is not None and error in sale.error
    assert pos.sales == [sale]


async def test_terminals_sell_until_stopped_with_fresh_keys(server: str) -> None:
    pos = Terminals(server, "tok", phase=lambda: "loss", count=2, interval_s=0.01)
    task = asyncio.create_task(pos.run())
    while len(pos.sales) < 10:
        await asyncio.sleep(0.01)
    pos.stop.set()
    await asyncio.wait_for(task, 5)
    keys = [s.key for s in pos.sales]
    assert len(set(keys)) == len(keys)
    assert {s.terminal for s in pos.sales} == {"pos-1", "pos-2"}
    assert all(s.outcome == "approved" and s.phase == "loss" for s in pos.sales)
    assert all(3000 <= s.amount < 30000 or s.amount in (BIG_SALE, DECLINED_AMOUNT)
               for s in pos.sales)


def test_amounts_include_bills_over_the_offline_limit_and_issuer_declines() -> None:
    rng = random.Random(3)
    amounts = [sale_amount(rng) for _ in range(2000)]
    assert 0.04 < amounts.count(BIG_SALE) / 2000 < 0.08
    assert 0.02 < amounts.count(DECLINED_AMOUNT) / 2000 < 0.06
    assert BIG_SALE > 50000  # the default offline_max_amount


def test_random_cards_pass_luhn_and_differ() -> None:
    rng = random.Random(7)
    pans = [random_pan(rng) for _ in range(200)]
    assert all(len(p) == 16 and p.startswith("4") and luhn_valid(p) for p in pans)
    assert len(set(pans)) == 200
    assert json.dumps(pans)  # plain strings
