"""A store in a namespace: the real daemon, the gateway simulator and a POS client."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from lab.box import SealKeyPair, write_seal_keys
from lab.gateway_sim import Faults, GatewaySimulator
from payments_cache.sealing import SealOpener
from tests.support import openapi
from tests.support.daemon import MERCHANT_KEY, TOKEN, DaemonProcess, write_config
from tests.support.netns import inside

#: The tests' daemon speaks HTTPS on loopback (`write_config(tls="on")`); every client
#: pins its certificate (`pinned_session`).
API = "https://127.0.0.1:18470"
_keys = itertools.count(1)

VISA = "4111111111111111"
MASTERCARD = "5555555555554444"


def payment_body(amount: int = 12500, pan: str = VISA, cvc: str | None = "123",
                 reference: str | None = None) -> dict[str, Any]:
    card: dict[str, Any] = {"pan": pan, "exp_month": 12, "exp_year": 2030}
    if cvc is not None:
        card["cvc"] = cvc
    return {"amount": amount, "currency": "KRW", "card": card, "terminal_id": "pos-1",
            "reference": reference or f"order-{next(_keys)}"}


@dataclass
class Answer:
    status: int
    body: dict[str, Any]


@dataclass
class Box:
    daemon: DaemonProcess
    sim: GatewaySimulator
    session: aiohttp.ClientSession
    seen: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: the gateway's seal key pair when the box seals cards (`store_box(sealed=True)`)
    seal: SealKeyPair | None = None

    async def pay(self, body: dict[str, Any] | bytes, key: str | None = None,
                  token: str = TOKEN, headers: dict[str, str] | None = None) -> Answer:
        hdrs = {"Authorization": f"Bearer {token}"} if token else {}
        if key is not None:
            hdrs["Idempotency-Key"] = key
        hdrs.update(headers or {})
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        async with self.session.post(f"{API}/v1/payments", data=data, headers=hdrs) as r:
            return Answer(r.status, await r.json())

    async def get(self, path: str) -> Answer:
        async with self.session.get(f"{API}{path}",
                                    headers={"Authorization": f"Bearer {TOKEN}"}) as r:
            return Answer(r.status, await r.json())

    async def drain(self) -> None:
        async with self.session.post(f"{API}/v1/queue/drain",
                                     headers={"Authorization": f"Bearer {TOKEN}"}) as r:
            assert r.status == 202

    async def status(self) -> dict[str, Any]:
        return (await self.get("/v1/status")).body


def pinned_session(pin: str, **kwargs: Any) -> aiohttp.ClientSession:
    """An aiohttp session that trusts exactly the certificate whose SHA-256 is `pin` (hex),
    as a POS pins its box. Every answer is checked against docs/openapi.json."""
    connector = aiohttp.TCPConnector(ssl=aiohttp.Fingerprint(bytes.fromhex(pin)))
    kwargs.setdefault("trace_configs", openapi.trace_configs())
    return aiohttp.ClientSession(connector=connector, **kwargs)


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 15.0,
                     what: str = "condition") -> None:
    """Re-check `check` until it holds; fail after `timeout`. For state owned by another
    process, which the test can only observe by asking."""
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


@asynccontextmanager
async def store_box(netns: str, tmp: Path, faults: Faults | None = None,
                    sealed: bool = False, nofile: int | None = None,
                    **tables: dict[str, Any]) -> AsyncIterator[Box]:
    """Everything lives in `netns`: the simulator, the daemon, the POS's sockets.

    `sealed`: a fresh gateway key pair in `tmp`; the simulator holds the private key, the
    box's `payments.seal_key_file` names the public one, so every card kept offline is
    sealed to the gateway (docs/gateway-protocol.md). `nofile`: the daemon's RLIMIT_NOFILE.
    `tables`:
    keys of the config's tables (`tests.support.daemon.write_config`)."""
    seal = write_seal_keys(tmp) if sealed else None
    if seal is not None:
        tables["payments"] = {**tables.get("payments", {}), "seal_key_file": seal.public}
    with inside(netns):
        opener = SealOpener.from_pem_files([seal.private]) if seal is not None else None
        sim = GatewaySimulator(MERCHANT_KEY, seed=7, faults=faults, seal_opener=opener)
        url = await sim.start()
        daemon = DaemonProcess(netns, write_config(tmp, gateway_url=url, **tables),
                               nofile=nofile)
        try:
            await asyncio.to_thread(daemon.notify.wait_for, "READY", "1")
            pin = await asyncio.to_thread(lambda: daemon.pin)
            async with pinned_session(pin) as session:
                yield Box(daemon, sim, session, seal=seal)
        finally:
            code = await asyncio.to_thread(daemon.stop)
            await sim.stop()
        assert code == 0, daemon.log()[-3000:]
