"""DNS over the probed uplink: a minimal codec (one question, A records) and the
resolver for targets given by name (package docs: names need the uplink's own DNS)."""

from __future__ import annotations

import asyncio
import ipaddress
import secrets
import socket
import struct
from dataclasses import dataclass

from failover.errors import ProbeConfigError
from failover.probes.accounting import UDP_HEADER, ip_header
from failover.probes.failures import ProbeFailed
from failover.probes.options import ProbeOptions
from failover.probes.retry import Attempts, udp_exchange
from failover.probes.sockets import bound_socket, family_of

__all__ = [
    "RCODES",
    "DnsAnswer",
    "build_dns_query",
    "dns_query",
    "parse_dns_response",
    "resolve_a",
    "resolve_kept",
]


def _encode_name(qname: str) -> bytes:
    out = bytearray()
    for label in qname.rstrip(".").split("."):
        raw = label.encode("ascii")
        if not 0 < len(raw) < 64:
            raise ProbeConfigError("qname", qname, "labels must be 1..63 bytes")
        out += bytes([len(raw)]) + raw
    return bytes(out + b"\x00")


def build_dns_query(qid: int, qname: str, qtype: int = 1) -> bytes:
    """A recursive (RD) query for one question, class IN."""
    header = struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0)
    return header + _encode_name(qname) + struct.pack("!HH", qtype, 1)


@dataclass(frozen=True, slots=True)
class DnsAnswer:
    rcode: int
    addresses: tuple[str, ...]


RCODES = {1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP", 5: "REFUSED"}


def _skip_name(data: bytes, off: int) -> int:
    for _ in range(128):
        if off >= len(data):
            raise ValueError("name runs past the end")
        length = data[off]
        if length & 0xC0 == 0xC0:
            return off + 2
        if length == 0:
            return off + 1
        off += 1 + length
    raise ValueError("name too long")


def parse_dns_response(data: bytes, query: bytes) -> DnsAnswer | None:
    """Check a response against ``query``; None when it is not an answer to it.

    Answers must carry the query's ID, the QR bit, opcode QUERY and the same
    question (case-insensitively: resolvers may randomise case). A records of
    the answer section are returned (others skipped).
    """
    if len(data) < 12:
        return None
    qid, flags, qdcount, ancount = struct.unpack_from("!HHHH", data, 0)
    if qid != struct.unpack_from("!H", query, 0)[0] or not flags & 0x8000:
        return None
    if (flags >> 11) & 0xF != 0 or qdcount != 1:
        return None
    question = query[12:]
    if data[12 : 12 + len(question)].lower() != question.lower():
        return None
    rcode = flags & 0xF
    addresses: list[str] = []
    off = 12 + len(question)
    try:
        for _ in range(ancount):
            off = _skip_name(data, off)
            rtype, _rclass, _ttl, rdlen = struct.unpack_from("!HHIH", data, off)
            off += 10
            rdata = data[off : off + rdlen]
            if len(rdata) != rdlen:
                break
            if rtype == 1 and rdlen == 4:
                addresses.append(socket.inet_ntop(socket.AF_INET, rdata))
            off += rdlen
    except (ValueError, struct.error):
        pass
    return DnsAnswer(rcode, tuple(addresses))


def _query_ids(count: int) -> list[int]:
    """``count`` different random query ids: every resend is a new query, so a reply
    names the send it answers (`failover.probes.retry`)."""
    ids: list[int] = []
    while len(ids) < count:
        qid = secrets.randbits(16)
        if qid not in ids:
            ids.append(qid)
    return ids


async def dns_query(
    server: str, qname: str, interface: str, options: ProbeOptions, wire: list[int],
    tally: Attempts | None = None,
) -> DnsAnswer:
    """Ask ``server`` for ``qname``'s A records through ``interface``, resending a new
    query every ``options.retry_after_s`` up to ``options.attempts``."""
    family = family_of(server)
    ids = _query_ids(max(options.attempts, 1))
    first = build_dns_query(ids[0], qname)
    index = {qid: n for n, qid in enumerate(ids)}

    def query(n: int) -> bytes:  # the n-th send: the same question under its own id
        return first if n == 0 else ids[n].to_bytes(2, "big") + first[2:]

    def sent(data: bytes) -> int:
        return index.get(int.from_bytes(data[:2], "big"), -1) if len(data) >= 2 else -1

    def accept(data: bytes) -> DnsAnswer | None:
        n = sent(data)
        return parse_dns_response(data, query(n)) if n >= 0 else None

    sock = bound_socket(family, socket.SOCK_DGRAM, 0, interface)
    try:
        sock.connect((server, 53))  # UDP: no handshake, only sets the peer filter
        return await udp_exchange(
            sock,
            first,
            accept,
            options,
            wire,
            UDP_HEADER + ip_header(family),
            make_payload=query,
            tally=tally,
            answered_by=sent,
        )
    finally:
        sock.close()


async def resolve_a(
    host: str, interface: str, options: ProbeOptions, wire: list[int] | None = None
) -> list[str]:
    """Addresses for ``host``: itself if an IP, else A records via the uplink's resolvers.

    The resolvers are ``options.servers()`` (configured, then learnt), asked in
    turn; without any this falls back to the system resolver, which is *not* bound
    to the interface (see module docs).
    """
    try:
        ipaddress.ip_address(host)
        return [host]
    except ValueError:
        pass
    wire = wire if wire is not None else [0, 0]
    servers = options.servers()
    if not servers:
        infos = await asyncio.get_running_loop().getaddrinfo(host, None, type=socket.SOCK_STREAM)
        return list(dict.fromkeys(str(info[4][0]) for info in infos))
    last: ProbeFailed | None = None
    for server in servers:
        answer = await dns_query(server, host, interface, options, wire)
        if answer.rcode == 0 and answer.addresses:
            return list(answer.addresses)
        last = ProbeFailed(
            f"cannot resolve {host!r} via {server}: "
            + (RCODES.get(answer.rcode, f"rcode {answer.rcode}") if answer.rcode else "no A")
        )
    assert last is not None
    raise last


async def resolve_kept(
    host: str, interface: str, options: ProbeOptions, wire: list[int]
) -> list[str]:
    """``resolve_a``, through ``options.connections``' cache when there is one (#13):
    a name need not be resolved over the uplink every round."""
    kept = options.connections
    if kept is None:
        return await resolve_a(host, interface, options, wire)
    return await kept.addresses(interface, host, lambda: resolve_a(host, interface, options, wire))
