"""The CVC lives only in the request's scope (and the PAN only while a payment is taken).

The box's payment side runs in this process, built as the daemon builds it
(`firmware.components.payments.build_payments`), behind the daemon's HTTP application; the
gateway simulator and the POS each run in a subprocess, so that the only copies of
the card in this process are the box's own. After each payment is answered, every
object the garbage collector tracks, and every string and bytes object they refer
to, is searched for a `Card` still holding a CVC, for the card number and for the
CVC as the POS body and the gateway body carry it.

The card number and the CVC are only ever put together inside the search (from
halves, never a literal the compiler could fold), so the test's own constants do not
count as copies.
"""

from __future__ import annotations

import asyncio
import gc
import json
import sys
import time
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from firmware.components.payments import PaymentsComponent, build_payments
from firmware.config import load_config
from firmware.daemon import Daemon
from lab.box import write_secret
from payments_cache.models import Card, ForwardState
from tests.support.daemon import MERCHANT_KEY, TOKEN, write_config

# A Luhn-valid Visa number and a CVC no other code in this process would produce.
PAN_HEAD, PAN_TAIL = "49176038", "27153649"
CVC_HEAD, CVC_TAIL = "07", "39"

POS = r"""
import http.client, json, sys
port, token, key, amount, pan_head, pan_tail, cvc_head, cvc_tail, keep = sys.argv[1:]
body = json.dumps({"amount": int(amount), "currency": "KRW",
                   "card": {"pan": pan_head + pan_tail, "exp_month": 12, "exp_year": 2030,
                            "cvc": cvc_head + cvc_tail},
                   "terminal_id": "pos-1", "reference": "order-" + key})
conn = http.client.HTTPConnection("127.0.0.1", int(port), timeout=30)
conn.request("POST", "/v1/payments", body, {"Authorization": "Bearer " + token,
             "Idempotency-Key": key, "Content-Type": "application/json",
             "Connection": "keep-alive" if keep == "keep" else "close"})
answer = conn.getresponse()
print(json.dumps({"status": answer.status, "body": json.loads(answer.read())}), flush=True)
sys.stdin.readline()   # keep: the connection stays open until the test says so
"""


@dataclass
class InProcessBox:
    daemon: Daemon
    payments: PaymentsComponent
    runner: web.AppRunner
    port: int
    gateway_url: str

    async def pay(self, key: str, amount: int = 12500) -> dict[str, Any]:
        """POST a payment from a POS subprocess; the answer once the box is done with it."""
        proc = await self._pos(key, amount, keep=False)
        out, _ = await proc.communicate(b"")
        assert proc.returncode == 0
        answer: dict[str, Any] = json.loads(out)
        await self._connections_closed()
        return answer

    @asynccontextmanager
    async def pay_keep_alive(self, key: str,
                             amount: int = 12500) -> AsyncIterator[dict[str, Any]]:
        """POST a payment on a connection the POS keeps open while the block runs."""
        proc = await self._pos(key, amount, keep=True)
        assert proc.stdout is not None and proc.stdin is not None
        try:
            yield json.loads(await proc.stdout.readline())
        finally:
            proc.stdin.close()
            assert await proc.wait() == 0
        await self._connections_closed()

    async def _pos(self, key: str, amount: int, keep: bool) -> asyncio.subprocess.Process:
        return await asyncio.create_subprocess_exec(
            sys.executable, "-c", POS, str(self.port), TOKEN, key, str(amount),
            PAN_HEAD, PAN_TAIL, CVC_HEAD, CVC_TAIL, "keep" if keep else "close",
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)

    async def _connections_closed(self) -> None:
        """The POS closed its connection; wait until the server has let go of it too."""
        server = self.runner.server
        assert server is not None
        deadline = time.monotonic() + 10
        while server.connections:
            assert time.monotonic() < deadline, "the POS connection was never released"
            await asyncio.sleep(0.01)


async def start_gateway(tmp: Path, *args: str) -> tuple[asyncio.subprocess.Process, str]:
    key_file = write_secret(tmp / "sim-merchant-key", MERCHANT_KEY)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "lab.gateway_sim", "--listen", "127.0.0.1:0",
        "--merchant-key-file", str(key_file), "--seed", "5", *args,
        stdout=asyncio.subprocess.PIPE)
    assert proc.stdout is not None
    line = (await proc.stdout.readline()).decode()
    assert line.startswith("gateway_sim listening on "), line
    return proc, line.split()[3]


@asynccontextmanager
async def in_process_box(tmp: Path, *sim_args: str,
                         gateway: bool = True) -> AsyncIterator[InProcessBox]:
    sim = None
    url = "http://127.0.0.1:9"   # nothing listens: connection refused
    if gateway:
        sim, url = await start_gateway(tmp, *sim_args)
    daemon = Daemon(load_config(write_config(tmp, gateway_url=url)))
    runner: web.AppRunner | None = None
    try:
        payments = await build_payments(daemon.context)
        runner = web.AppRunner(daemon.app, handle_signals=False, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        yield InProcessBox(daemon, payments, runner, port, url)
    finally:
        if runner is not None:
            await runner.cleanup()
        for closer in reversed(daemon.context.closers):
            await closer()
        if sim is not None:
            sim.terminate()
            await sim.wait()


def _holder(obj: object) -> str:
    """What holds a leaked object, for the failure message."""
    kinds = sorted({type(r).__qualname__ for r in gc.get_referrers(obj)
                    if not isinstance(r, list) or len(r) < 1000})
    size = f" of {len(obj)}" if isinstance(obj, str | bytes | bytearray) else ""
    return f"{type(obj).__qualname__}{size} held by {', '.join(kinds)}"  # never the value


def card_leaks() -> list[str]:
    """Every trace of the test card in this process's reachable objects."""
    gc.collect()
    pan = PAN_HEAD + PAN_TAIL
    cvc = CVC_HEAD + CVC_TAIL
    texts = (pan, f'"cvc": "{cvc}"', f'"cvc":"{cvc}"')
    needles: list[str | bytes] = [*texts, *(t.encode() for t in texts)]
    own = {id(n) for n in needles} | {id(cvc)}
    found: list[str] = []
    seen: set[int] = set()
    objects = gc.get_objects()
    for obj in objects:
        # only the test's own card: other test modules keep cards of their own
        if isinstance(obj, Card) and obj.cvc is not None and obj.pan == pan:
            found.append("a Card with a CVC: " + _holder(obj))
        for ref in _with_referents(obj):
            if id(ref) in seen or id(ref) in own:
                continue
            seen.add(id(ref))
            if _contains(ref, needles) or (isinstance(ref, str) and ref == cvc):
                found.append(_holder(ref))
    del objects
    return found


def _with_referents(obj: object) -> Iterable[object]:
    yield obj
    yield from gc.get_referents(obj)


def _contains(value: object, needles: list[str | bytes]) -> bool:
    if isinstance(value, str):
        return any(isinstance(n, str) and n in value for n in needles)
    if isinstance(value, bytes | bytearray):
        return any(isinstance(n, bytes) and n in value for n in needles)
    return False


def test_the_search_finds_a_card_that_is_kept() -> None:
    """The control: a Card with a CVC and a body kept by the test are both found."""
    kept = [Card(pan=PAN_HEAD + PAN_TAIL, exp_month=12, exp_year=2030,
                 cvc=CVC_HEAD + CVC_TAIL),
            json.dumps({"cvc": CVC_HEAD + CVC_TAIL}).encode()]
    found = card_leaks()
    assert any(f.startswith("a Card with a CVC") for f in found), found
    assert any(f.startswith("bytes") for f in found), found
    assert any(f.startswith("str") for f in found), found   # the Card's own PAN
    del kept, found
    assert card_leaks() == []


@pytest.mark.parametrize(("sim_args", "amount", "status"), [
    ((), 12500, "approved"),
    (("--decline-amount", "666"), 666, "declined"),
    (("--down", "503"), 12500, "approved_offline"),         # 503: not processed
    (("--drop-answers", "1"), 12500, "approved_offline"),   # answer lost: unknown outcome
], ids=["approved", "declined", "gateway-503", "answer-lost"])
async def test_no_card_outlives_a_payment_taken_online_or_attempted(
        tmp_path: Path, sim_args: tuple[str, ...], amount: int, status: str) -> None:
    assert card_leaks() == []
    async with in_process_box(tmp_path, *sim_args) as box:
        answer = await box.pay("k-scope-1", amount)
        assert answer["status"] == 200, answer
        assert answer["body"]["status"] == status
        assert card_leaks() == []
        replay = await box.pay("k-scope-1", amount)       # the idempotent replay too
        assert replay["body"] == answer["body"]
        assert card_leaks() == []


async def test_no_card_outlives_a_payment_taken_offline(tmp_path: Path) -> None:
    """Gateway unreachable (connection refused), then straight to the stand-in while it
    stays unreachable, then with no uplink at all."""
    async with in_process_box(tmp_path, gateway=False) as box:
        first = await box.pay("k-off-1")
        assert first["body"]["status"] == "approved_offline", first
        assert card_leaks() == []
        second = await box.pay("k-off-2", 12600)
        assert second["body"]["status"] == "approved_offline", second
        assert card_leaks() == []
        box.daemon.context.uplinks.set("down")
        third = await box.pay("k-off-3", 12700)
        assert third["body"]["status"] == "approved_offline", third
        assert card_leaks() == []


async def test_no_card_outlives_forwarding_an_offline_payment(tmp_path: Path) -> None:
    """Stood in while no uplink works, forwarded once one is back: the forwarder opens
    the stored card (PAN, no CVC) for the attempt only."""
    async with in_process_box(tmp_path) as box:
        box.daemon.context.uplinks.set("down")
        answer = await box.pay("k-fwd-1")
        assert answer["body"]["status"] == "approved_offline", answer
        assert card_leaks() == []
        box.daemon.context.uplinks.set("up")
        assert box.payments.forwarder is not None and box.payments.store is not None
        box.payments.forwarder.wake()
        await box.payments.forwarder.drain_once()
        payment = await box.payments.store.get(answer["body"]["id"])
        assert payment is not None and payment.forward_state is ForwardState.FORWARDED
        del payment
        assert card_leaks() == []


async def test_no_card_outlives_a_payment_on_a_kept_alive_connection(tmp_path: Path) -> None:
    """A POS that keeps its connection open: while it idles, the server still holds the
    last request's objects (aiohttp keeps them bound until the next request); none of
    them may carry the card."""
    async with in_process_box(tmp_path) as box:
        async with box.pay_keep_alive("k-keep-1") as answer:
            assert answer["body"]["status"] == "approved", answer
            server = box.runner.server
            assert server is not None and len(server.connections) == 1
            assert card_leaks() == []
        box.daemon.context.uplinks.set("down")
        async with box.pay_keep_alive("k-keep-2") as answer:
            assert answer["body"]["status"] == "approved_offline", answer
            assert card_leaks() == []
