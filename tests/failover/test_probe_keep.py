"""Kept HTTPS probe connections (#13) in real namespaces: one TCP connection for many
probes, a blackhole still fails the probe on the kept connection within its deadline,
a connection the server closed while idle is re-opened, bytes per probe, and names
resolved once per TTL."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import ssl
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest

from failover.probes.accounting import ByteCounter
from failover.probes.keep import ProbeConnections
from failover.probes.options import ProbeOptions
from failover.probes.round import ProbeResult, probe
from failover.targets import parse_target
from tests.failover.netlab import (
    RESOLVER,
    SERVER,
    TLS_NAME,
    Lab,
    Pki,
    Services,
    blackhole,
    serving_topology,
)
from tests.support.clock import ManualClock
from tests.support.netns import inside, run

PORT = 8443
KEPT = parse_target(f"https://{TLS_NAME}:{PORT}/health")
RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok"


@dataclass
class KeepAliveServer:
    """HTTP/1.1 over TLS that keeps connections open; counts what it accepted."""

    accepted: int = 0
    request_sizes: list[int] = field(default_factory=list)
    writers: list[asyncio.StreamWriter] = field(default_factory=list)

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        self.writers.append(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                self.request_sizes.append(len(head))
                writer.write(RESPONSE)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
            pass
        finally:
            writer.close()

    def close_all(self) -> None:
        for writer in self.writers:
            writer.close()

    async def closed(self) -> None:
        """Abort every connection (no TLS shutdown: the path may be blackholed)."""
        for writer in self.writers:
            writer.transport.abort()
            with contextlib.suppress(ConnectionError, ssl.SSLError):
                await writer.wait_closed()


@dataclass
class Rig:
    lab: Lab
    server: KeepAliveServer
    services: Services
    clock: ManualClock
    connections: ProbeConnections
    options: ProbeOptions

    async def probe(self, timeout_s: float = 2.0) -> ProbeResult:
        return await probe(KEPT, "up1", timeout_s, options=self.options, counter=ByteCounter())


@pytest.fixture
async def rig(pki: Pki, tmp_path: object) -> AsyncIterator[Rig]:
    async with serving_topology(pki, str(tmp_path)) as (lab, server_ssl, services):
        with inside(lab.isp["up1"]):
            sock = socket.create_server((SERVER, PORT))
        keep = KeepAliveServer()
        server = await asyncio.start_server(keep.serve, sock=sock, ssl=server_ssl)
        clock = ManualClock()
        connections = ProbeConnections(monotonic=clock.monotonic)
        options = ProbeOptions(ssl=pki.client_context(), dns_servers=(RESOLVER,),
                               connections=connections)
        try:
            with inside(lab.box):
                yield Rig(lab, keep, services["up1"], clock, connections, options)
        finally:
            await connections.close()
            server.close()
            await keep.closed()


async def test_successive_probes_share_one_connection_and_one_resolution(rig: Rig) -> None:
    for _ in range(5):
        result = await rig.probe()
        assert result.ok, result.error
    assert rig.server.accepted == 1
    assert len(rig.server.request_sizes) == 5
    assert len(rig.services.dns_peers) == 1  # resolved over up1 once
    rig.clock.advance(31.0)  # past the TTL: resolved again, the connection kept
    assert (await rig.probe()).ok
    assert len(rig.services.dns_peers) == 2
    assert rig.server.accepted == 1


async def test_a_blackhole_fails_the_probe_on_the_kept_connection(rig: Rig) -> None:
    assert (await rig.probe()).ok
    assert our_sockets(rig.lab) == 1  # kept
    blackhole(rig.lab.isp["up1"], "isp1")
    timeout = 0.6
    started = time.monotonic()
    result = await rig.probe(timeout)
    elapsed = time.monotonic() - started
    assert not result.ok and result.error == "no answer within 0.6s", result.error
    assert timeout <= elapsed < timeout + 0.3
    assert rig.server.accepted == 1  # the hedged connections never got through
    assert result.bytes_sent > 0
    await sockets_closed(rig.lab)  # the kept connection too: the next probe connects afresh


def our_sockets(lab: Lab) -> int:
    """Sockets this process holds open to the server (the kernel's view, ``ss``)."""
    out = run("ip", "netns", "exec", lab.box, "ss", "-tnpH", "dst", f"{SERVER}:{PORT}")
    return out.stdout.count(f"pid={os.getpid()},")


async def sockets_closed(lab: Lab, within: float = 2.0) -> None:
    async with asyncio.timeout(within):
        while our_sockets(lab):
            await asyncio.sleep(0.05)


async def test_a_connection_the_server_closed_while_idle_is_reopened(rig: Rig) -> None:
    assert (await rig.probe()).ok
    rig.server.close_all()
    result = await rig.probe()
    assert result.ok, result.error
    assert rig.server.accepted == 2
    assert (await rig.probe()).ok
    assert rig.server.accepted == 2


async def test_each_kept_probe_counts_its_own_bytes(rig: Rig) -> None:
    first = await rig.probe()
    assert first.ok, first.error
    assert first.bytes_received > 1000  # the handshake: the certificate chain came in
    later = [await rig.probe() for _ in range(3)]
    assert all(r.ok for r in later)
    request = rig.server.request_sizes[-1]
    for r in later:
        # the request and response in one TLS record each, their segments and ACKs
        assert request < r.bytes_sent < request + 300, (r.bytes_sent, request)
        assert len(RESPONSE) < r.bytes_received < len(RESPONSE) + 300, r.bytes_received
    assert rig.server.accepted == 1
