"""No LAN client can starve the POS API (`firmware.http_limits`): the real daemon over TLS.

Timeouts are lowered through the config (`api.request_timeout_s` and friends) so a
slowloris is cut in about a second, not 20; a flood runs against a daemon whose
RLIMIT_NOFILE is 128, the size of the finding that made /healthz time out.
"""

from __future__ import annotations

import asyncio
import contextlib
import select
import socket
import ssl
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from lab.gateway_sim import Faults
from tests.support.box import Box, payment_body, store_box
from tests.support.daemon import TOKEN
from tests.support.netns import inside

pytestmark = pytest.mark.netns

HOST, PORT = "127.0.0.1", 18470
TIMEOUT_S = 1.0
LIMITS = {"request_timeout_s": TIMEOUT_S, "keepalive_timeout_s": 2.0,
          "tls_handshake_timeout_s": TIMEOUT_S}
#: a POS must still be answered within this while under attack (it answers in ms)
ANSWER_S = 1.0


def tls_client() -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


@contextlib.asynccontextmanager
async def box_with(netns: str, tmp: Path, faults: Faults | None = None,
                   nofile: int | None = None) -> AsyncIterator[Box]:
    async with store_box(netns, tmp, api=LIMITS, faults=faults, nofile=nofile) as box:
        yield box


def connect(netns: str, source: str = HOST, tls: bool = True) -> socket.socket:
    with inside(netns):
        raw = socket.create_connection((HOST, PORT), timeout=5, source_address=(source, 0))
    return tls_client().wrap_socket(raw) if tls else raw


def closed(sock: socket.socket) -> bool:
    """Whether the box has closed the connection (EOF, reset or a TLS alert)."""
    try:
        return sock.recv(4096) == b""
    except (ConnectionError, ssl.SSLError):
        return True


def trickle_until_closed(sock: socket.socket, data: bytes, every_s: float = 0.1,
                         limit_s: float = 10.0) -> float:
    """Send `data` a byte every `every_s` (the attack) until the box closes the connection;
    the seconds that took. Each pause waits on the socket, so the close is seen at once."""
    started = time.monotonic()
    for i in range(10**6):
        readable, _, _ = select.select([sock], [], [], every_s)
        if readable and closed(sock):
            return time.monotonic() - started
        assert time.monotonic() - started < limit_s, "still open"
        try:
            sock.sendall(data[i % len(data):i % len(data) + 1])
        except (ConnectionError, ssl.SSLError):
            return time.monotonic() - started
    raise AssertionError("unreachable")


def timed_out(box: Box) -> int:
    return int(box.daemon.api_status()["connections"]["timed_out_total"])


async def test_slow_headers_are_cut(netns: str, tmp_path: Path) -> None:
    async with box_with(netns, tmp_path) as box:
        sock = connect(netns)
        sock.sendall(b"POST /v1/payments HTTP/1.1\r\nHost: box\r\n")
        seconds = await asyncio.to_thread(trickle_until_closed, sock, b"X-Slow: 1\r\n")
        assert TIMEOUT_S * 0.9 <= seconds <= TIMEOUT_S + 1.0, seconds
        assert timed_out(box) == 1
        # and the box still serves
        assert (await box.get("/v1/status")).status == 200


async def test_slow_body_is_cut(netns: str, tmp_path: Path) -> None:
    async with box_with(netns, tmp_path) as box:
        sock = connect(netns)
        sock.sendall(b"POST /v1/payments HTTP/1.1\r\nHost: box\r\n"
                     b"Authorization: Bearer " + TOKEN.encode() + b"\r\n"
                     b"Idempotency-Key: slow-1\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 400\r\n\r\n{\"amount\": 1")
        seconds = await asyncio.to_thread(trickle_until_closed, sock, b"0")
        assert TIMEOUT_S * 0.9 <= seconds <= TIMEOUT_S + 1.0, seconds
        assert timed_out(box) == 1
        assert "Traceback" not in box.daemon.log()


async def test_a_silent_connection_is_cut(netns: str, tmp_path: Path) -> None:
    """No TLS hello at all (the handshake timeout), or a handshake and then nothing (the
    request timeout)."""
    async with box_with(netns, tmp_path) as box:
        for tls in (False, True):
            sock = connect(netns, tls=tls)
            started = time.monotonic()
            readable, _, _ = await asyncio.to_thread(select.select, [sock], [], [], 10)
            assert readable and closed(sock)
            assert time.monotonic() - started <= TIMEOUT_S + 1.0
        connections = box.daemon.api_status()["connections"]
        assert connections["handshake_failed_total"] == 1
        assert connections["timed_out_total"] == 1


async def test_an_idle_kept_alive_connection_is_closed(netns: str, tmp_path: Path) -> None:
    async with box_with(netns, tmp_path) as box:
        sock = connect(netns)
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: box\r\n\r\n")
        answer = sock.recv(65536)
        assert answer.startswith(b"HTTP/1.1 200")
        started = time.monotonic()
        readable, _, _ = await asyncio.to_thread(select.select, [sock], [], [], 10)
        assert readable and closed(sock)
        assert 1.5 <= time.monotonic() - started <= 3.5
        assert timed_out(box) == 0  # the keep-alive timer, not a slow client


async def test_a_slow_gateway_is_not_a_slow_client(netns: str, tmp_path: Path) -> None:
    """The deadline is on reading the request: a payment whose online authorization takes
    longer than request_timeout_s is answered."""
    async with box_with(netns, tmp_path, faults=Faults(latency_s=TIMEOUT_S * 1.6)) as box:
        started = time.monotonic()
        answer = await box.pay(payment_body(), key="slow-gateway-1")
        assert answer.status == 200, answer.body
        assert answer.body["status"] == "approved"
        assert time.monotonic() - started >= TIMEOUT_S * 1.6
        assert timed_out(box) == 0


# --- floods ---------------------------------------------------------------------------


async def open_flood(netns: str, sources: list[str], per_source: int,
                     half_requests: bool) -> list[asyncio.StreamWriter | socket.socket]:
    """Connections that never finish: silent TCP, or TLS with half a request."""
    held: list[asyncio.StreamWriter | socket.socket] = []
    with inside(netns):
        for source in sources:
            for _ in range(per_source):
                if not half_requests:
                    sock = socket.socket()
                    sock.setblocking(False)
                    sock.bind((source, 0))
                    with contextlib.suppress(BlockingIOError):
                        sock.connect((HOST, PORT))
                    held.append(sock)
                    continue
                try:
                    _, writer = await asyncio.wait_for(asyncio.open_connection(
                        HOST, PORT, ssl=tls_client(), local_addr=(source, 0)), 5)
                except (OSError, TimeoutError, ssl.SSLError):
                    continue  # refused or evicted in its handshake: part of the attack
                writer.write(b"POST /v1/payments HTTP/1.1\r\nHost: box\r\nX-Slow: ")
                held.append(writer)
    return held


async def close_flood(held: list[asyncio.StreamWriter | socket.socket]) -> None:
    for item in held:
        if isinstance(item, socket.socket):
            item.close()
        else:
            item.transport.abort()


async def pos_is_served(box: Box, key: str) -> None:
    """/healthz and a payment, each answered within ANSWER_S."""
    for attempt in ("healthz", "payment"):
        started = time.monotonic()
        if attempt == "healthz":
            answer = await asyncio.wait_for(box.get("/healthz"), ANSWER_S * 5)
        else:
            answer = await asyncio.wait_for(box.pay(payment_body(), key=key), ANSWER_S * 5)
        seconds = time.monotonic() - started
        assert answer.status == 200, (attempt, answer)
        assert seconds < ANSWER_S, (attempt, seconds)


def api_log_lines_since(box: Box, mark: int) -> list[str]:
    """What the API, aiohttp and asyncio logged since `mark` (the modem simulator chats)."""
    return [line for line in box.daemon.log()[mark:].splitlines()
            if not line.startswith(("<6>hw.modem", "<6>payments_cache", "<6>storebox.daemon"))]


@pytest.mark.parametrize("half_requests", [False, True], ids=["silent", "half-requests"])
async def test_a_flood_from_one_address_leaves_the_pos_served(
        netns: str, tmp_path: Path, half_requests: bool) -> None:
    async with box_with(netns, tmp_path, nofile=128) as box:
        mark = len(box.daemon.log())
        await box.get("/healthz")  # the POS's own connection, kept alive
        held = await open_flood(netns, ["127.0.0.2"], 500 if not half_requests else 200,
                                half_requests)
        try:
            await pos_is_served(box, f"flood-one-{half_requests}")
            connections = box.daemon.api_status()["connections"]
            assert connections["open"] <= connections["per_address_limit"] + 2
            assert connections["evicted_total"] + connections["refused_total"] > 0
        finally:
            await close_flood(held)
        lines = api_log_lines_since(box, mark)
        assert not any("Traceback" in line or "Too many open files" in line for line in lines)
        assert len(lines) <= 3, lines


@pytest.mark.parametrize("half_requests", [False, True], ids=["silent", "half-requests"])
async def test_a_flood_from_many_addresses_leaves_the_pos_served(
        netns: str, tmp_path: Path, half_requests: bool) -> None:
    """More connections than the descriptors the box has: the total cap holds, each new
    connection takes an attacker's place, a new POS connection too."""
    async with box_with(netns, tmp_path, nofile=128) as box:
        mark = len(box.daemon.log())
        sources = [f"127.0.1.{n}" for n in range(1, 31)]
        held = await open_flood(netns, sources, 12 if not half_requests else 6, half_requests)
        try:
            # a new connection from the POS (the session has none yet)
            await pos_is_served(box, f"flood-many-{half_requests}")
            connections = box.daemon.api_status()["connections"]
            assert connections["limit"] < 128
            assert connections["peak"] <= connections["limit"]
            assert connections["evicted_total"] > 0
        finally:
            await close_flood(held)
        lines = api_log_lines_since(box, mark)
        assert not any("Traceback" in line or "Too many open files" in line for line in lines)
        assert len(lines) <= 3, lines
