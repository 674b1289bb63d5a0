"""Payments benchmarks (issue 2): offline accept latency and rate, drain rate, RSS, crashes.

Run with `make bench`. Everything runs in a network namespace: the real daemon
(synchronous=FULL), the gateway simulator, and a POS client on loopback. Sealing is on
(docs/gateway-protocol.md): the box seals every card it keeps to a fresh gateway key, the simulator
holds the private key and opens every card it is forwarded.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import time
from pathlib import Path

import aiohttp
import pytest

from benchmarks.report import percentile, record
from lab.gateway_sim import Faults
from lab.pos import random_pan
from tests.support.box import API, Box, eventually, payment_body, store_box
from tests.support.crash_drill import OFFLINE_LIMITS, crash_drill
from tests.support.daemon import TOKEN

OFFLINE = Faults(down=True, down_mode="refuse")
BENCH_LIMITS = {**OFFLINE_LIMITS, "forward_concurrency": 32}
pytestmark = pytest.mark.timeout(3600)
KILLS = int(os.environ.get("STOREBOX_BENCH_KILLS", "1000"))
#: STOREBOX_BENCH_SEALED=0 measures the box keeping cards locally, for comparison
SEALED = os.environ.get("STOREBOX_BENCH_SEALED", "1") != "0"


async def _post(session: aiohttp.ClientSession, key: str, body: bytes) -> dict:  # type: ignore[type-arg]
    headers = {"Authorization": f"Bearer {TOKEN}", "Idempotency-Key": key}
    async with session.post(f"{API}/v1/payments", data=body, headers=headers) as r:
        assert r.status == 200, await r.text()
        return await r.json()  # type: ignore[no-any-return]


def _bodies(n: int, seed: int) -> list[bytes]:
    rng = random.Random(seed)
    return [json.dumps(payment_body(rng.randrange(100, 40000), pan=random_pan(rng))).encode()
            for _ in range(n)]


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


async def _accept(box: Box, prefix: str, bodies: list[bytes], concurrency: int) -> float:
    slots = asyncio.Semaphore(concurrency)

    async def one(i: int, body: bytes) -> None:
        async with slots:
            doc = await _post(box.session, f"{prefix}-{i}", body)
            assert doc["status"] == "approved_offline", doc

    started = time.perf_counter()
    await asyncio.gather(*(one(i, b) for i, b in enumerate(bodies)))
    return time.perf_counter() - started


async def test_offline_accept_latency_rate_drain_and_rss(netns: str, tmp_path: Path) -> None:
    async with store_box(netns, tmp_path, faults=OFFLINE, payments=BENCH_LIMITS,
                         sealed=SEALED) as box:
        kid = box.seal.kid if box.seal is not None else None
        protection = (await box.status())["payments"]
        assert (protection["protection"], protection["seal_kid"]) == (
            ("sealed", kid) if SEALED else ("local", None))
        rss_idle = _rss_mb(box.daemon.proc.pid)
        # latency: one POS, one request at a time
        latencies = []
        for i, body in enumerate(_bodies(1000, 1)):
            started = time.perf_counter()
            await _post(box.session, f"lat-{i}", body)
            latencies.append((time.perf_counter() - started) * 1000)
        rss_one_pos = _rss_mb(box.daemon.proc.pid)
        # sustained rate: 16 POS terminals at once
        n_rate = 5000
        elapsed = await _accept(box, "rate", _bodies(n_rate, 2), concurrency=16)
        rate = n_rate / elapsed
        rss_16_pos = _rss_mb(box.daemon.proc.pid)
        # fill to 10,000 queued and read the daemon's memory
        queued = (await box.get("/v1/queue?limit=1")).body["stats"]["count"]
        await _accept(box, "fill", _bodies(10_000 - queued, 3), concurrency=16)
        queue = (await box.get("/v1/queue?limit=1")).body["stats"]
        assert queue["count"] == 10_000
        rss = _rss_mb(box.daemon.proc.pid)
        # drain against the local simulator
        await box.sim.set_faults(down=False)
        started = time.perf_counter()
        await box.drain()

        async def empty() -> bool:
            return (await box.get("/v1/queue?limit=1")).body["stats"]["count"] == 0  # type: ignore[no-any-return]

        await eventually(empty, timeout=600, what="the drain")
        drain_s = time.perf_counter() - started
        assert box.sim.stats().processed == 10_000
        arrivals = box.sim.authorizations()
        assert all(box.sim.processed_count(a.payment_id) == 1 for a in arrivals)
        # every forward arrived offline, sealed under the box's kid, opened by the gateway
        sealed = sum(1 for a in arrivals if a.offline and a.seal_kid is not None
                     and a.seal_kid == kid)
        assert sealed == (10_000 if SEALED else 0), f"{sealed} of 10,000 sealed under {kid}"
        assert box.sim.stats().card_refused_422 == 0
    record("payments" if SEALED else "payments_unsealed", [
        ("offline accept p50 (ms)", percentile(latencies, 50), "-"),
        ("offline accept p99 (ms)", percentile(latencies, 99), "target <= 10"),
        ("offline accepts per second (16 POS)", rate, "target >= 500"),
        ("daemon RSS at start, nothing queued (MB)", rss_idle, "-"),
        ("daemon RSS after 1,000 from one POS (MB)", rss_one_pos, "-"),
        ("daemon RSS after 5,000 from 16 POS, 6,000 queued (MB)", rss_16_pos, "-"),
        ("daemon RSS with 10,000 queued (MB)", rss, "target <= 80"),
        ("drain rate (payments/s)", 10_000 / drain_s, "target >= 500"),
        ("forwards that arrived sealed (kid) and were opened", sealed,
         "10000 of 10000" if SEALED else "- (sealing off)"),
    ])


async def test_crash_drill(netns: str, tmp_path: Path) -> None:
    report = await crash_drill(netns, tmp_path, kills=KILLS, seed=1021, drain_timeout=600,
                               sealed=SEALED)
    summary = report.summary()
    targets = {"lost": "0", "duplicated": "0", "not_sealed": "0", "card_refused_422": "0"}
    record("crash_drill", [(k, v, targets.get(k, "")) for k, v in summary.items()])
    assert report.lost == [] and report.duplicated == [] and report.unexpected == []
    assert report.conflicts_422 == 0
    assert report.integrity == "ok"
    # every forwarded offline payment arrived sealed under the box's kid and was opened
    assert report.seal_kid is not None or not SEALED
    assert report.not_sealed == [] and report.card_refused_422 == 0, summary
    assert report.sealed_forwards == (report.approved_offline if SEALED else 0), summary
