"""Simulated boxes for `bench_fleet.py`: thousands of MQTT connections per process, each
speaking the box's side of docs/mqtt.md.

A minimal MQTT 3.1.1 client over asyncio streams (CONNECT with the `status` Will,
SUBSCRIBE, PUBLISH QoS 0/1 with PUBACK, PINGREQ, DISCONNECT): aiomqtt (paho) costs a
thread-safe client, a socket pair and a few hundred kB per connection, which 10,000 boxes
on two cores cannot afford. Each box publishes its birth (`status` online, retained, with
its session), its `state` (retained) every period, events with `seq` (kept until the
broker's PUBACK and sent again after a reconnect, as the agent keeps them in SQLite), and
answers signed `cmd/<name>` messages on `cmd_result` after checking the signature with
the operator's public key.

The orchestrator drives a worker process (`worker`) over a multiprocessing pipe with
tuples: `("connect", spread_s)`, `("period", s)`, `("wired", ids, down, spread_s)`,
`("silence", ids)`, `("revive", ids)`, `("events", n)`, `("stats",)`, `("stop",)`; each
gets one answer.

`worker_viewers` is the other kind of worker: `n` dashboards reading `GET /api/stream`,
timing each box update from the box's publish (`uplink.wired.bench_sent`, the simulator's
wall clock) to the viewer (dashboard latency) and to the server's model (`state_at`:
ingest lag).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import random
import re
import struct
import time
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from multiprocessing.connection import Connection
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from firmware.fleet.topics import canonical_message

CONNECT, CONNACK, PUBLISH, PUBACK = 0x10, 0x20, 0x30, 0x40
SUBSCRIBE, SUBACK, PINGREQ, PINGRESP, DISCONNECT = 0x82, 0x90, 0xC0, 0xD0, 0xE0
TICK_S = 0.05
ISPS = (("KT", 0.4), ("SKT", 0.3), ("LGU+", 0.3))
REGIONS = ("Seoul", "Busan", "Incheon", "Daegu", "Gwangju")


# ---------------------------------------------------------------------- MQTT codec

def _length(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _str(text: str) -> bytes:
    data = text.encode()
    return struct.pack("!H", len(data)) + data


def packet(kind: int, body: bytes) -> bytes:
    return bytes([kind]) + _length(len(body)) + body


def connect_packet(client_id: str, keepalive: int, will_topic: str, will: bytes) -> bytes:
    flags = 0x02 | 0x04 | 0x08 | 0x20  # clean session, Will, Will QoS 1, Will retained
    body = _str("MQTT") + bytes([4, flags]) + struct.pack("!H", keepalive)
    body += _str(client_id) + _str(will_topic) + struct.pack("!H", len(will)) + will
    return packet(CONNECT, body)


def publish_packet(topic: str, payload: bytes, pid: int = 0, retain: bool = False,
                   dup: bool = False) -> bytes:
    kind = PUBLISH | (0x02 if pid else 0) | (0x01 if retain else 0) | (0x08 if dup else 0)
    return packet(kind, _str(topic) + (struct.pack("!H", pid) if pid else b"") + payload)


async def read_packet(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readexactly(1)
    n, shift = 0, 0
    while True:
        byte = (await reader.readexactly(1))[0]
        n += (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            break
    return head[0], await reader.readexactly(n) if n else b""


# ---------------------------------------------------------------------- one box

def _now_iso() -> str:
    return datetime.now(UTC).isoformat()


class Box:
    """One simulated box on one MQTT connection."""

    def __init__(self, sim: Simulator, index: int) -> None:
        self.sim = sim
        self.id = f"bench-{index:05d}"
        self.isp = _pick_isp(index)
        self.region = REGIONS[index % len(REGIONS)]
        self.root = f"storebox/{self.id}"
        self.boot = f"{random.getrandbits(48):012x}"
        self.counter = 0
        self.seq = 0
        self.wired_down = False
        self.writer: asyncio.StreamWriter | None = None
        self.silent = False
        self.next_pid = 0
        #: events sent, not yet acknowledged (pid -> payload); unsent events wait in order
        self.inflight: dict[int, bytes] = {}
        self.unsent: list[bytes] = []
        self.last_sent = 0.0
        self.task: asyncio.Task[None] | None = None
        self.revived = asyncio.Event()

    @property
    def session(self) -> str:
        return f"{self.boot}-{self.counter}"

    @property
    def connected(self) -> bool:
        return self.writer is not None and not self.silent

    def status(self, online: bool) -> bytes:
        return json.dumps({"status": "online" if online else "offline",
                           "session": self.session, "since": _now_iso()}).encode()

    def state(self) -> bytes:
        wired = {"state": "down" if self.wired_down else "up", "interface": "wan0",
                 "carrier": True, "latency_ms": 8.2, "loss_pct": 0.0, "since": None,
                 "reason": "4 consecutive failed rounds" if self.wired_down else None,
                 "bench_sent": time.time()}
        lte = {"state": "standby", "interface": "wwan0", "carrier": None, "latency_ms": 41.0,
               "loss_pct": 0.0, "since": None, "reason": None}
        return json.dumps({
            "device_id": self.id, "version": "1.4.0", "phase": "running",
            "started_at": "2026-12-06T08:00:00+00:00", "uptime_s": 3600.0,
            "uplink": {"active": "lte" if self.wired_down else "wired", "since": None,
                       "wired": wired, "lte": lte, "failovers_total": 0,
                       "failbacks_total": 0},
            "modem": {"operator": "SKT" if self.isp != "SKT" else "KT", "signal_dbm": -71,
                      "same_carrier_as_wired": False, "sim": "ready", "model": "EC25"},
            "payments": {"queued": 0, "queued_amount": 0, "forwarded_total": 120},
            "config_version": "0123456789abcdef",
            "site": {"isp": self.isp, "region": self.region}},
            separators=(",", ":")).encode()

    def send(self, data: bytes) -> None:
        if self.writer is not None and not self.silent:
            self.writer.write(data)
            self.last_sent = time.monotonic()

    def publish_state(self) -> None:
        self.send(publish_packet(f"{self.root}/state", self.state(), self._pid(), retain=True))

    def _pid(self) -> int:
        self.next_pid = self.next_pid % 65535 + 1
        return self.next_pid

    def event(self) -> None:
        self.seq += 1
        self.sim.events_generated += 1
        doc = {"seq": self.seq, "session": self.session, "kind": "fault",
               "severity": "info", "message": "bench event", "at": _now_iso()}
        self.unsent.append(json.dumps(doc, separators=(",", ":")).encode())
        if self.connected:
            self._send_events()

    def _send_events(self) -> None:
        """Every event not yet acknowledged, in order (again after a reconnect)."""
        again = list(self.inflight.values()) + self.unsent
        self.inflight, self.unsent = {}, []
        for payload in again:
            pid = self._pid()
            self.inflight[pid] = payload
            self.send(publish_packet(f"{self.root}/events", payload, pid))

    async def run(self) -> None:
        """Stay connected: reconnect with capped backoff and jitter, as the agent does."""
        delay = 0.5
        while True:
            try:
                await self._session()
                delay = 0.5
            except (OSError, asyncio.IncompleteReadError, ConnectionError):
                pass
            self.writer = None
            if self.silent:  # killed: it stays down until revived
                self.revived.clear()
                await self.revived.wait()
                delay = 0.5
                continue
            await asyncio.sleep(random.uniform(0.5, 1.0) * delay)
            delay = min(delay * 2, 8.0)

    async def _session(self) -> None:
        reader, writer = await asyncio.open_connection(self.sim.host, self.sim.port)
        try:
            self.counter += 1
            writer.write(connect_packet(f"storebox-{self.id}", self.sim.keepalive,
                                        f"{self.root}/status", self.status(False)))
            kind, body = await read_packet(reader)
            if kind != CONNACK or body[1] != 0:
                raise ConnectionError(f"CONNACK {body!r}")
            writer.write(packet(SUBSCRIBE, struct.pack("!H", 1) + _str(f"{self.root}/cmd/+")
                                + b"\x01"))
            self.writer, self.silent = writer, False
            self.send(publish_packet(f"{self.root}/status", self.status(True), self._pid(),
                                     retain=True))
            self.publish_state()
            self._send_events()
            self.sim.connected_once.add(self.id)
            await self._read(reader)
        finally:
            self.writer = None
            writer.transport.abort()

    async def _read(self, reader: asyncio.StreamReader) -> None:
        while True:
            kind, body = await read_packet(reader)
            if self.silent:
                continue
            if kind & 0xF0 == PUBACK:
                pid = struct.unpack("!H", body[:2])[0]
                if self.inflight.pop(pid, None) is not None:
                    self.sim.events_acked += 1
            elif kind & 0xF0 == PUBLISH:
                self._command(kind, body)

    def _command(self, kind: int, body: bytes) -> None:
        (n,) = struct.unpack("!H", body[:2])
        topic = body[2:2 + n].decode()
        rest = body[2 + n:]
        if kind & 0x06:
            self.send(packet(PUBACK, rest[:2]))
            rest = rest[2:]
        name = topic.rsplit("/", 1)[-1]
        doc = json.loads(rest)
        answer: dict[str, Any] = {"id": doc.get("id"), "name": name}
        if self.sim.verify(self.id, name, doc):
            answer |= {"ok": True, "result": {"pong": True, "device_id": self.id,
                                              "version": "1.4.0", "at": _now_iso()}}
            self.sim.commands_ok += 1
        else:
            answer |= {"ok": False, "error": {"code": "bad_signature",
                                              "message": "signature does not verify"}}
            self.sim.commands_refused += 1
        self.send(publish_packet(f"{self.root}/cmd_result", json.dumps(answer).encode(),
                                 self._pid()))

    def ping_if_due(self, now: float) -> None:
        if self.connected and now - self.last_sent >= self.sim.keepalive * 0.5:
            self.send(packet(PINGREQ, b""))

    def revive(self) -> None:
        """The box restarts: its old connection is dropped, a new session connects."""
        self.silent = False
        if self.writer is not None:
            self.writer.transport.abort()
        self.revived.set()


def _pick_isp(index: int) -> str:
    point = (index * 0.6180339887) % 1.0  # spread evenly, same for every run
    for isp, share in ISPS:
        if point < share:
            return isp
        point -= share
    return ISPS[-1][0]


# ---------------------------------------------------------------------- a worker's boxes

class Simulator:
    def __init__(self, host: str, port: int, indices: Sequence[int], keepalive: int,
                 public_key_pem: bytes) -> None:
        self.host, self.port, self.keepalive = host, port, keepalive
        key = load_pem_public_key(public_key_pem)
        assert isinstance(key, Ed25519PublicKey)
        self.key = key
        self.boxes = [Box(self, i) for i in indices]
        self.by_id = {b.id: b for b in self.boxes}
        self.period_s = 60.0
        self.connected_once: set[str] = set()
        self.events_generated = self.events_acked = 0
        self.commands_ok = self.commands_refused = 0
        self.states_sent = 0
        self._cursor = 0.0

    def verify(self, device: str, name: str, doc: dict[str, Any]) -> bool:
        try:
            message = canonical_message(device, name, doc["id"], doc.get("args", {}),
                                        doc["expires_at"])
            self.key.verify(base64.b64decode(doc["sig"]), message)
            return datetime.fromisoformat(doc["expires_at"]) > datetime.now(UTC) \
                - timedelta(seconds=1)
        except Exception:
            return False

    async def connect(self, spread_s: float) -> None:
        step = spread_s / max(1, len(self.boxes))
        for box in self.boxes:
            box.task = asyncio.create_task(box.run())
            await asyncio.sleep(step)

    async def tick(self) -> None:
        """States every `period_s`, spread evenly over the boxes; keepalive pings."""
        last = pinged = time.monotonic()
        while True:
            await asyncio.sleep(TICK_S)
            now = time.monotonic()
            self._cursor += len(self.boxes) * (now - last) / self.period_s
            last = now
            while self._cursor >= 1.0:
                self._cursor -= 1.0
                box = self.boxes[self.states_sent % len(self.boxes)]
                self.states_sent += 1
                if box.connected:
                    box.publish_state()
            if now - pinged >= 1.0:
                pinged = now
                for box in self.boxes:
                    box.ping_if_due(now)

    async def wired(self, ids: Sequence[str], down: bool, spread_s: float) -> list[float]:
        """`ids` publish a state with wired down (or up), spread over `spread_s`; the wall
        times they were sent."""
        sent = []
        step = spread_s / max(1, len(ids))
        began = time.monotonic()
        for n, device in enumerate(ids):
            box = self.by_id[device]
            box.wired_down = down
            if box.connected:
                box.publish_state()
                sent.append(time.time())
            await asyncio.sleep(max(0.0, began + (n + 1) * step - time.monotonic()))
        return sent

    def stats(self) -> dict[str, Any]:
        return {"boxes": len(self.boxes), "connected": sum(b.connected for b in self.boxes),
                "connected_once": len(self.connected_once),
                "events_generated": self.events_generated, "events_acked": self.events_acked,
                "events_unacked": sum(len(b.inflight) + len(b.unsent) for b in self.boxes),
                "last_seq": {b.id: b.seq for b in self.boxes},
                "commands_ok": self.commands_ok, "commands_refused": self.commands_refused,
                "states_sent": self.states_sent}


async def _requests(conn: Connection) -> AsyncIterator[tuple[Any, ...]]:
    """The parent's requests on the pipe `conn` as they come, read without blocking the
    worker's event loop."""
    loop = asyncio.get_running_loop()
    ready = asyncio.Event()
    loop.add_reader(conn.fileno(), ready.set)
    while True:
        await ready.wait()
        ready.clear()
        while conn.poll():
            yield conn.recv()


async def _serve(conn: Connection, sim: Simulator) -> None:
    ticker = asyncio.create_task(sim.tick())
    background: set[asyncio.Task[Any]] = set()
    async for request in _requests(conn):
        if request[0] == "stop":
            ticker.cancel()
            for box in sim.boxes:
                if box.task is not None:
                    box.task.cancel()
                if box.writer is not None:
                    box.writer.write(packet(DISCONNECT, b""))
            conn.send(("stopped",))
            return
        task = asyncio.create_task(_handle(conn, sim, request))
        background.add(task)
        task.add_done_callback(background.discard)


async def _handle(conn: Connection, sim: Simulator, request: tuple[Any, ...]) -> None:
    what = request[0]
    if what == "connect":
        await sim.connect(request[1])
        conn.send(("connecting", len(sim.boxes)))
    elif what == "period":
        sim.period_s = request[1]
        conn.send(("period", request[1]))
    elif what == "wired":
        conn.send(("wired", await sim.wired(request[1], request[2], request[3])))
    elif what == "silence":
        for device in request[1]:
            sim.by_id[device].silent = True
        conn.send(("silenced", time.time()))
    elif what == "revive":
        for device in request[1]:
            sim.by_id[device].revive()
        conn.send(("revived", time.time()))
    elif what == "events":
        for _ in range(request[1]):
            for box in sim.boxes:
                box.event()
        conn.send(("events", sim.events_generated))
    elif what == "stats":
        conn.send(("stats", sim.stats()))


def worker(conn: Connection, host: str, port: int, indices: list[int], keepalive: int,
           public_key_pem: bytes) -> None:
    """A worker process: `indices` boxes against the broker at host:port."""
    _raise_fd_limit()
    sim = Simulator(host, port, indices, keepalive, public_key_pem)
    asyncio.run(_serve(conn, sim))


def _raise_fd_limit() -> None:
    import resource

    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


# ---------------------------------------------------------------------- dashboards

_SENT = re.compile(rb'"bench_sent":([0-9.e+]+)')
_STATE_AT = re.compile(rb'"state_at":"([^"]+)"')
_ISP = re.compile(rb'"isp":"([^"]*)"')
_DEVICE = re.compile(rb'"device_id":"([^"]*)"')


class Viewers:
    """`n` SSE clients; lags per phase (dashboard: all of viewer 0's, a tenth of the
    others'; ingest: viewer 0's), incidents as first seen."""

    def __init__(self, url: str, n: int) -> None:
        self.url, self.n = url, n
        self.phase = "start"
        self.dashboard: dict[str, list[float]] = {}
        self.ingest: dict[str, list[float]] = {}
        self.updates: dict[str, list[int]] = {}
        self.incidents: list[tuple[float, str, bytes]] = []
        #: when viewer 0 last saw each box go offline (wall time), and those it sees offline
        self.offline: dict[str, float] = {}
        self._down: set[str] = set()
        #: viewer 0's newest ingest lag, and when
        self.last_lag = (0.0, 0.0)
        self.connected = 0

    async def view(self, k: int) -> None:
        import aiohttp

        timeout = aiohttp.ClientTimeout(total=None, sock_read=None)
        async with aiohttp.ClientSession(timeout=timeout) as session, \
                session.get(self.url + "/api/stream") as response:
            self.connected += 1
            event = b""
            async for line in response.content:
                if line.startswith(b"event: "):
                    event = line[7:].strip()
                elif line.startswith(b"data: "):
                    self._data(k, event, line, time.time())

    def _data(self, k: int, event: bytes, line: bytes, now: float) -> None:
        counts = self.updates.setdefault(self.phase, [0] * self.n)
        if event == b"incident":
            if k == 0:
                isp = _ISP.search(line)
                self.incidents.append((now, isp.group(1).decode() if isp else "", line))
            return
        if event != b"box":
            return
        counts[k] += 1
        if k == 0:
            self._presence(line, now)
        sent = _SENT.search(line)
        if sent is None:
            return
        t = float(sent.group(1))
        if k == 0 or counts[k] % 10 == 0:
            self.dashboard.setdefault(self.phase, []).append(now - t)
        if k == 0:
            at = _STATE_AT.search(line)
            if at is not None:
                lag = datetime.fromisoformat(at.group(1).decode()).timestamp() - t
                self.ingest.setdefault(self.phase, []).append(lag)
                self.last_lag = (now, lag)

    def _presence(self, line: bytes, now: float) -> None:
        """Viewer 0's latest online -> offline change of each box (a box killed twice, or
        gone with the broker before it was killed, is timed from its latest change)."""
        offline = b'"online":false' in line
        if not offline and not self._down:
            return  # the common frame: an online box while none is seen offline
        device = _DEVICE.search(line)
        if device is None:
            return
        name = device.group(1).decode()
        if offline:
            if name not in self._down:
                self._down.add(name)
                self.offline[name] = now
        elif b'"online":true' in line:
            self._down.discard(name)

    def report(self) -> dict[str, Any]:
        def pct(values: list[float], p: float) -> float:
            ordered = sorted(values)
            return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))] \
                if ordered else float("nan")

        out: dict[str, Any] = {"connected": self.connected, "phases": {},
                               "offline": self.offline, "last_lag": self.last_lag}
        for phase in set(self.dashboard) | set(self.updates):
            dash, ingest = self.dashboard.get(phase, []), self.ingest.get(phase, [])
            out["phases"][phase] = {
                "dashboard_p50": pct(dash, 50), "dashboard_p99": pct(dash, 99),
                "ingest_p50": pct(ingest, 50), "ingest_p99": pct(ingest, 99),
                "ingest_max": max(ingest, default=float("nan")),
                "samples": len(ingest), "updates": self.updates.get(phase, [])}
        out["incidents"] = [(t, isp, line.decode()[6:]) for t, isp, line in self.incidents]
        return out


async def _view_all(conn: Connection, viewers: Viewers) -> None:
    tasks = [asyncio.create_task(viewers.view(k)) for k in range(viewers.n)]
    async for request in _requests(conn):
        if request[0] == "phase":
            viewers.phase = request[1]
            conn.send(("phase", request[1]))
        elif request[0] == "report":
            conn.send(("report", viewers.report()))
        elif request[0] == "stop":
            for task in tasks:
                task.cancel()
            with contextlib.suppress(BaseException):
                await asyncio.gather(*tasks, return_exceptions=True)
            conn.send(("stopped",))
            return


def worker_viewers(conn: Connection, url: str, n: int) -> None:
    asyncio.run(_view_all(conn, Viewers(url, n)))
