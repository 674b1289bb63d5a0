"""Kill the daemon at random moments under POS load, then prove exactly-once forwarding.

Used by the crash-safety test (≥ 50 kills) and the benchmark (≥ 1,000 kills). With
`sealed=True` (the default) the box seals every card it keeps to the gateway simulator's
key (docs/gateway-protocol.md), and the report says how each forwarded payment arrived: sealed under
the box's kid and opened by the simulator, or not.
"""

from __future__ import annotations

import asyncio
import json
import random
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from lab.gateway_sim import StoredAuthorization
from lab.pos import random_pan
from tests.support.box import API, Box, eventually, payment_body, store_box
from tests.support.daemon import TOKEN

OFFLINE_LIMITS = {
    "offline_max_count": 1000000,
    "offline_max_total": 100000000000,
    "velocity_max_count": 1000000,
    "velocity_max_amount": 100000000000,
}


@dataclass
class CrashReport:
    kills: int = 0
    payments: int = 0
    approved_offline: int = 0
    declined_offline: int = 0
    answered_after_retry: int = 0
    lost: list[str] = field(default_factory=list)
    duplicated: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    conflicts_422: int = 0
    integrity: str = ""
    seconds: float = 0.0
    #: of `seconds`: the kills under load, and the drain after them
    kill_seconds: float = 0.0
    drain_seconds: float = 0.0
    #: the kid the box sealed to (None: the box kept cards locally)
    seal_kid: str | None = None
    #: forwards that arrived at the gateway as offline authorizations
    offline_forwards: int = 0
    #: of those, sealed under `seal_kid` (the simulator stores one only once it opened it)
    sealed_forwards: int = 0
    #: payments that arrived unsealed, under another kid, or as online authorizations
    #: although the box was offline for the whole drill (sealed drills only)
    not_sealed: list[str] = field(default_factory=list)
    #: sealed cards the gateway could not open (422 unknown_kid, authentication_failed...)
    card_refused_422: int = 0

    def summary(self) -> dict[str, Any]:
        return {"kills": self.kills, "payments": self.payments,
                "approved_offline": self.approved_offline,
                "declined_offline": self.declined_offline,
                "answered_after_retry": self.answered_after_retry,
                "lost": len(self.lost), "duplicated": len(self.duplicated),
                "unexpected": len(self.unexpected), "conflicts_422": self.conflicts_422,
                "seal_kid": self.seal_kid, "offline_forwards": self.offline_forwards,
                "sealed_forwards": self.sealed_forwards, "not_sealed": len(self.not_sealed),
                "card_refused_422": self.card_refused_422,
                "integrity": self.integrity, "seconds": round(self.seconds, 1),
                "kill_seconds": round(self.kill_seconds, 1),
                "drain_seconds": round(self.drain_seconds, 1)}


class Pos:
    """A POS that retries the same Idempotency-Key and body until it gets an answer."""

    def __init__(self, session: aiohttp.ClientSession, rng: random.Random) -> None:
        self.session = session
        self.rng = rng
        self.answers: dict[str, dict[str, Any]] = {}
        self.retried: set[str] = set()
        self.seq = 0

    async def one(self, worker: int) -> None:
        self.seq += 1
        key = f"crash-{worker}-{self.seq}"
        body = json.dumps(payment_body(self.rng.randrange(100, 50000),
                                       pan=random_pan(self.rng))).encode()
        headers = {"Authorization": f"Bearer {TOKEN}", "Idempotency-Key": key}
        deadline = time.monotonic() + 120  # a box that never comes back fails the drill
        while True:
            if time.monotonic() > deadline:
                raise AssertionError(f"{key}: no answer within 120 s of retrying")
            try:
                async with self.session.post(f"{API}/v1/payments", data=body,
                                             headers=headers) as r:
                    if r.status == 200:
                        self.answers[key] = await r.json()
                        return
                    if r.status != 503:
                        raise AssertionError(f"{key}: HTTP {r.status} {await r.text()}")
            except (TimeoutError, aiohttp.ClientError, ConnectionError):
                pass
            self.retried.add(key)
            await asyncio.sleep(0.02)  # back off while the daemon restarts

    async def run(self, worker: int, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await self.one(worker)


async def _kill_loop(box: Box, kills: int, rng: random.Random) -> int:
    done = 0
    for _ in range(kills):
        await asyncio.sleep(rng.uniform(0.0, 0.15))  # a random moment under load
        await asyncio.to_thread(box.daemon.kill)
        done += 1
        await asyncio.to_thread(box.daemon.restart)
    return done


async def _drain_all(box: Box, timeout: float) -> None:
    await box.sim.set_faults(down=False)
    await box.drain()

    async def empty() -> bool:
        queue = (await box.get("/v1/queue?limit=1")).body["stats"]
        return queue["count"] == 0  # type: ignore[no-any-return]

    await eventually(empty, timeout=timeout, what="the queue to drain")


def _integrity(state_dir: Path) -> str:
    conn = sqlite3.connect(f"file:{state_dir / 'payments.sqlite3'}?mode=ro", uri=True)
    try:
        return str(conn.execute("PRAGMA integrity_check").fetchone()[0])
    finally:
        conn.close()


def _sealing(report: CrashReport, arrivals: list[StoredAuthorization],
             seal_kid: str | None) -> None:
    """How the forwarded payments arrived. The gateway was down for the whole load, so
    every one of them must be an offline authorization, sealed under `seal_kid` when the
    box seals."""
    report.seal_kid = seal_kid
    offline = [a for a in arrivals if a.offline]
    report.offline_forwards = len(offline)
    report.sealed_forwards = sum(1 for a in offline
                                 if seal_kid is not None and a.seal_kid == seal_kid)
    if seal_kid is not None:
        report.not_sealed = sorted(a.payment_id for a in arrivals
                                   if not a.offline or a.seal_kid != seal_kid)


async def crash_drill(netns: str, tmp: Path, kills: int, workers: int = 4,
                      seed: int = 1, drain_timeout: float = 120.0,
                      sealed: bool = True) -> CrashReport:
    rng = random.Random(seed)
    report = CrashReport()
    started = time.monotonic()
    from lab.gateway_sim import Faults

    async with store_box(netns, tmp, faults=Faults(down=True, down_mode="refuse"),
                         payments=OFFLINE_LIMITS, sealed=sealed) as box:
        pos = Pos(box.session, rng)
        stop = asyncio.Event()
        load = [asyncio.create_task(pos.run(w, stop)) for w in range(workers)]
        killing = time.monotonic()
        try:
            report.kills = await _kill_loop(box, kills, rng)
        finally:
            stop.set()
            await asyncio.gather(*load)
        draining = time.monotonic()
        report.kill_seconds = draining - killing
        await _drain_all(box, drain_timeout)
        report.drain_seconds = time.monotonic() - draining
        stats = box.sim.stats()
        report.conflicts_422 = stats.conflicts_422
        report.card_refused_422 = stats.card_refused_422
        approved = {a["id"] for a in pos.answers.values() if a["status"] == "approved_offline"}
        report.payments = len(pos.answers)
        report.approved_offline = len(approved)
        report.declined_offline = sum(a["status"] == "declined_offline"
                                      for a in pos.answers.values())
        report.answered_after_retry = len(pos.retried & pos.answers.keys())
        arrivals = box.sim.authorizations()
        _sealing(report, arrivals, box.seal.kid if box.seal is not None else None)
        arrived = {a.payment_id for a in arrivals}
        report.lost = sorted(approved - arrived)
        report.unexpected = sorted(arrived - approved)
        report.duplicated = sorted(p for p in arrived if box.sim.processed_count(p) != 1)
    report.integrity = _integrity(tmp / "state")
    report.seconds = time.monotonic() - started
    return report
