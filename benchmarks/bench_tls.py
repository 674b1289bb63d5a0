"""POS API over TLS (issue 8): offline accept latency and rate with kept-alive pinned
connections, the cost of a new handshake, and a POS's latency while one attacker floods
the box with idle connections.

Loopback inside a network namespace only; bounded (a few thousand requests). The daemon
runs as the tests run it (`tests.support.box.store_box`: TLS on 127.0.0.1, the POS pins
the box's certificate), the gateway down so every payment is accepted offline.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import socket
import threading
import time
from pathlib import Path

import aiohttp
import pytest

from benchmarks.report import percentile, record
from lab.gateway_sim import Faults
from lab.pos import random_pan
from tests.support.box import API, Box, payment_body, pinned_session, store_box
from tests.support.crash_drill import OFFLINE_LIMITS
from tests.support.daemon import TOKEN
from tests.support.netns import inside

OFFLINE = Faults(down=True, down_mode="refuse")
pytestmark = pytest.mark.timeout(900)
HOST, PORT = "127.0.0.1", 18470


def _bodies(n: int, seed: int) -> list[bytes]:
    rng = random.Random(seed)
    return [json.dumps(payment_body(rng.randrange(100, 40000), pan=random_pan(rng))).encode()
            for _ in range(n)]


async def _post(session: aiohttp.ClientSession, key: str, body: bytes) -> float:
    headers = {"Authorization": f"Bearer {TOKEN}", "Idempotency-Key": key}
    started = time.perf_counter()
    async with session.post(f"{API}/v1/payments", data=body, headers=headers) as r:
        assert r.status == 200, await r.text()
        assert (await r.json())["status"] == "approved_offline"
    return (time.perf_counter() - started) * 1000


async def _sequential(session: aiohttp.ClientSession, prefix: str, n: int) -> list[float]:
    return [await _post(session, f"{prefix}-{i}", body)
            for i, body in enumerate(_bodies(n, hash(prefix) & 0xFFFF))]


async def _terminals(box: Box, prefix: str, n: int, terminals: int) -> float:
    """`terminals` POS, each its own kept-alive pinned connection; payments per second."""
    pin = await asyncio.to_thread(lambda: box.daemon.pin)
    bodies = _bodies(n, 2)
    sessions = [pinned_session(pin) for _ in range(terminals)]
    try:
        async def terminal(t: int) -> None:
            for i in range(t, n, terminals):
                await _post(sessions[t], f"{prefix}-{i}", bodies[i])

        started = time.perf_counter()
        await asyncio.gather(*(terminal(t) for t in range(terminals)))
        return n / (time.perf_counter() - started)
    finally:
        for session in sessions:
            await session.close()


async def _new_connections(pin: str, n: int) -> list[float]:
    """GET /healthz on a new TCP connection and TLS handshake each time (ms)."""
    connector = aiohttp.TCPConnector(ssl=aiohttp.Fingerprint(bytes.fromhex(pin)),
                                     force_close=True)
    out = []
    async with aiohttp.ClientSession(connector=connector) as session:
        for _ in range(n):
            started = time.perf_counter()
            async with session.get(f"{API}/healthz") as r:
                assert r.status == 200
                await r.read()
            out.append((time.perf_counter() - started) * 1000)
    return out


async def test_offline_accept_over_tls(netns: str, tmp_path: Path) -> None:
    async with store_box(netns, tmp_path, faults=OFFLINE, payments=OFFLINE_LIMITS) as box:
        await _sequential(box.session, "warm", 50)
        latencies = await _sequential(box.session, "lat", 1000)
        rate = await _terminals(box, "rate", 3000, terminals=16)
        fresh = await _new_connections(box.daemon.pin, 300)
        kept = []
        for _ in range(300):
            started = time.perf_counter()
            assert (await box.get("/healthz")).status == 200
            kept.append((time.perf_counter() - started) * 1000)
    record("tls_offline_accept", [
        ("offline accept p50 (ms, TLS keep-alive)", percentile(latencies, 50), ""),
        ("offline accept p99 (ms, TLS keep-alive)", percentile(latencies, 99), "<= 10"),
        ("offline accept rate, 16 terminals (/s)", rate, ">= 500"),
        ("/healthz p50, kept-alive (ms)", percentile(kept, 50), ""),
        ("/healthz p50, new TCP+TLS each (ms)", percentile(fresh, 50), ""),
        ("/healthz p99, new TCP+TLS each (ms)", percentile(fresh, 99), ""),
        ("handshake cost p50 (ms)", percentile(fresh, 50) - percentile(kept, 50), ""),
    ])


class Attacker(threading.Thread):
    """One address (127.0.0.2) that keeps `count` idle connections open, reconnecting
    whatever the box closes, until stopped."""

    def __init__(self, netns: str, count: int) -> None:
        super().__init__(daemon=True)
        self.netns = netns
        self.count = count
        self.stop = threading.Event()
        self.attempts = 0

    def run(self) -> None:
        with inside(self.netns):
            held: list[socket.socket] = []
            while not self.stop.is_set():
                while len(held) < self.count:
                    sock = socket.socket()
                    sock.setblocking(False)
                    sock.bind(("127.0.0.2", 0))
                    with contextlib.suppress(BlockingIOError):
                        sock.connect((HOST, PORT))
                    held.append(sock)
                    self.attempts += 1
                self.stop.wait(0.05)
                alive = []
                for sock in held:  # drop the ones the box closed or refused
                    try:
                        gone = sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
                    except BlockingIOError:
                        gone = False
                    except OSError:
                        gone = True
                    if gone:
                        sock.close()
                    else:
                        alive.append(sock)
                held = alive
            for sock in held:
                sock.close()


async def test_pos_latency_under_an_idle_connection_flood(netns: str, tmp_path: Path) -> None:
    async with store_box(netns, tmp_path, faults=OFFLINE, payments=OFFLINE_LIMITS) as box:
        await _sequential(box.session, "warm", 50)
        baseline = await _sequential(box.session, "base", 500)
        attacker = Attacker(netns, 500)
        attacker.start()
        try:
            while attacker.attempts < 500:
                await asyncio.sleep(0.01)
            flooded = await _sequential(box.session, "flood", 1000)
            fresh = await _new_connections(box.daemon.pin, 100)
            healthz = []
            for _ in range(300):
                started = time.perf_counter()
                assert (await box.get("/healthz")).status == 200
                healthz.append((time.perf_counter() - started) * 1000)
            connections = (await box.status())["api"]["connections"]
        finally:
            attacker.stop.set()
            await asyncio.to_thread(attacker.join)
        log = box.daemon.log()
    assert "Traceback" not in log and "Too many open files" not in log
    record("tls_flood", [
        ("POS payment p99, no flood (ms)", percentile(baseline, 99), ""),
        ("POS payment p50, 500-connection flood (ms)", percentile(flooded, 50), ""),
        ("POS payment p99, 500-connection flood (ms)", percentile(flooded, 99), "<= 50"),
        ("POS /healthz p99, flood (ms)", percentile(healthz, 99), "<= 50"),
        ("POS new connection p99, flood (ms)", percentile(fresh, 99), ""),
        ("attacker connection attempts", attacker.attempts, ""),
        ("refused by the per-address cap", connections["refused_total"], ""),
        ("box connections open at the end", connections["open"], ""),
    ])
