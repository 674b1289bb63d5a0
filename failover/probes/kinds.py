"""One probe per target kind (DNS, TCP, ICMP, HTTP/HTTPS), each through the sockets of
one uplink; ``PROBES`` maps a kind to its probe. A probe returns when the target
answered and raises ``ProbeFailed`` (or an OS/aiohttp error) when it did not."""

from __future__ import annotations

import asyncio
import errno
import secrets
import socket
import struct
from collections.abc import Awaitable, Callable

from failover.probes.accounting import ip_header
from failover.probes.dns import RCODES, dns_query, resolve_kept
from failover.probes.failures import ProbeFailed
from failover.probes.http import probe_http
from failover.probes.options import ProbeOptions
from failover.probes.retry import Attempts, hedged, udp_exchange
from failover.probes.sockets import TcpBytes, accounting_socket, bound_socket, family_of
from failover.targets import ProbeTarget, TargetKind

__all__ = ["PROBES"]


async def _probe_dns(
    target: ProbeTarget, interface: str, options: ProbeOptions, wire: list[int],
    tally: Attempts,
) -> None:
    assert target.qname is not None
    answer = await dns_query(target.host, target.qname, interface, options, wire, tally)
    if answer.rcode != 0:
        raise ProbeFailed(f"DNS {RCODES.get(answer.rcode, f'rcode {answer.rcode}')}")


async def _probe_tcp(
    target: ProbeTarget, interface: str, options: ProbeOptions, wire: list[int],
    tally: Attempts,
) -> None:
    assert target.port is not None
    addr = (await resolve_kept(target.host, interface, options, wire))[0]
    family = family_of(addr)
    sink = TcpBytes()
    loop = asyncio.get_running_loop()

    async def connect_once() -> None:
        sock = accounting_socket(family, socket.SOCK_STREAM, 0, interface, sink)
        try:
            await loop.sock_connect(sock, (addr, target.port))
        finally:
            sock.close()

    try:
        await hedged(connect_once, options.attempts, options.retry_after_s, tally)
    finally:
        sink.finish()
        wire[0] += sink.sent
        wire[1] += sink.received


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\x00"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


def _icmp_socket(family: int, interface: str) -> tuple[socket.socket, bool]:
    """An ICMP socket: unprivileged ping socket if allowed, else raw. (sock, is_raw)."""
    proto = socket.IPPROTO_ICMPV6 if family == socket.AF_INET6 else socket.IPPROTO_ICMP
    try:
        return bound_socket(family, socket.SOCK_DGRAM, proto, interface), False
    except PermissionError:
        pass
    except OSError as exc:
        if exc.errno not in (errno.EACCES, errno.EPERM, errno.EPROTONOSUPPORT):
            raise
    return bound_socket(family, socket.SOCK_RAW, proto, interface), True


async def _probe_icmp(
    target: ProbeTarget, interface: str, options: ProbeOptions, wire: list[int],
    tally: Attempts,
) -> None:
    addr = (await resolve_kept(target.host, interface, options, wire))[0]
    family = family_of(addr)
    v6 = family == socket.AF_INET6
    echo_request, echo_reply = (128, 129) if v6 else (8, 0)
    sock, raw = _icmp_socket(family, interface)
    ident = secrets.randbits(16)
    seq0 = secrets.randbits(15)
    body = secrets.token_bytes(options.icmp_payload)
    try:
        sock.connect((addr, 0))  # no handshake: sets the peer filter
        if not raw:  # the kernel replaces the identifier with the socket's "port"
            ident = sock.getsockname()[1]

        def make(n: int) -> bytes:
            seq = (seq0 + n) & 0xFFFF
            header = struct.pack("!BBHHH", echo_request, 0, 0, ident, seq)
            csum = 0 if v6 else _checksum(header + body)
            return struct.pack("!BBHHH", echo_request, 0, csum, ident, seq) + body

        def icmp(data: bytes) -> bytes:
            return data[(data[0] & 0x0F) * 4 :] if raw and not v6 and data else data

        def accept(data: bytes) -> bool | None:
            data = icmp(data)
            if len(data) < 8:
                return None
            kind, _code, _csum, rid, rseq = struct.unpack_from("!BBHHH", data)
            if kind != echo_reply or rid != ident:
                return None
            if (rseq - seq0) & 0xFFFF >= options.attempts or data[8:] != body:
                return None
            return True

        def answered_by(data: bytes) -> int:
            return (int(struct.unpack_from("!H", icmp(data), 6)[0]) - seq0) & 0xFFFF

        header = ip_header(family)
        recv_header = 0 if raw and not v6 else header
        await udp_exchange(sock, b"", accept, options, wire, header, make, recv_header,
                           tally, answered_by)
    finally:
        sock.close()


#: kind -> probe(target, interface, options, wire bytes [sent, received], attempts tally)
PROBES: dict[TargetKind, Callable[[ProbeTarget, str, ProbeOptions, list[int], Attempts],
                                  Awaitable[None]]] = {
    TargetKind.TCP: _probe_tcp,
    TargetKind.DNS: _probe_dns,
    TargetKind.HTTP: probe_http,
    TargetKind.HTTPS: probe_http,
    TargetKind.ICMP: _probe_icmp,
}
