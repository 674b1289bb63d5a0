"""End-to-end probes bound to one uplink interface.

Every socket a probe opens is bound to the uplink with ``SO_BINDTODEVICE``, so
a probe tests *that* uplink whatever today's default route is: the wired line
is watched while LTE carries traffic and vice versa.

What the route controller must guarantee
----------------------------------------
``SO_BINDTODEVICE`` restricts the socket to the device, it does not invent a
route: the kernel still looks the destination up (with the output interface
fixed) and fails with ``ENETUNREACH`` unless some table consulted for the flow
has a route through that device. So, for every uplink that is up (healthy or
being watched for recovery), not only the active one:

* keep a route to the probe targets through that uplink — normally its own
  default route, in the main table with a worse metric than the active
  uplink's (``default via GW_LTE dev wwan0 metric 200`` next to
  ``default via GW_WIRED dev eth0 metric 100``), or in a per-uplink table
  selected by ``ip rule add oif wwan0 lookup N`` (oif rules match bound
  sockets);
* fail over make-before-break: add the new active route before removing or
  demoting the old one, and never delete an uplink's route just because it is
  not active — only when the interface loses its address/gateway;
* keep reverse-path filtering loose on uplinks (``rp_filter`` 0 or 2):
  with strict mode (1) the answers to a probe on the non-default uplink fail
  the reverse-path check and are dropped, and that uplink looks dead;
* a probe target given by name needs a resolver reached over the same uplink:
  pass that uplink's DNS servers in ``ProbeOptions.dns_servers``. Without them
  names go through the system resolver, i.e. over the default route, and a
  dead active uplink would make the standby's name-based probes fail too.

Probes never raise for network failures: they return ``ProbeResult`` with
``ok=False`` and a short ``error``. Bad arguments raise ``ProbeConfigError``.

Loss tolerance: single-exchange probes (DNS, ICMP) retransmit after
``retry_after_s`` up to ``attempts`` times within the deadline; TCP and HTTP(S)
start a hedged second connection after ``retry_after_s`` (a lost SYN is
otherwise retransmitted by the kernel only after 1 s, past the deadline). An
answer that *is* an answer (refused, RCODE != 0, HTTP 503, bad certificate)
ends the probe at once as failed.

Byte accounting (IP-level bytes, what an LTE operator bills)
-----------------------------------------------------------
* UDP/DNS: each datagram counts payload + 8 (UDP) + 20/40 (IPv4/IPv6).
  An A query for ``gateway.example`` is 33 bytes → 61 sent, the answer
  49 bytes → 77 received: ~140 bytes per probe without loss.
* ICMP echo: 8 + ``icmp_payload`` (16) + 20 → 44 bytes each way.
* TCP (and HTTP/HTTPS over it): read from ``TCP_INFO`` when the socket is
  closed — segments in/out times (20/40 IP + 32 TCP with timestamps), +8 for
  SYN options, plus the payload bytes (retransmissions included) — plus an
  estimate of the close that happens after the snapshot (FIN/ACK: 2 segments
  each way). A TCP connect probe (SYN, ACK out; SYN-ACK in; then the close)
  is 216 + 164 = 380 bytes; a plain HTTP GET ~920 bytes; an HTTPS probe is
  dominated by the server's certificate chain (~3.3 KB with a one-certificate
  EC chain in the tests, 5-8 KB with a real RSA chain); keep HTTPS off the LTE
  standby target list.
Link-layer framing is not counted. Totals are kept per interface in a
``ByteCounter`` (``default_counter()`` unless one is passed).
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import logging
import os
import secrets
import socket
import ssl
import statistics
import struct
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult

from failover.errors import ProbeConfigError
from failover.targets import ProbeTarget, TargetKind

__all__ = [
    "ByteCounter",
    "ByteTotals",
    "ProbeOptions",
    "ProbeResult",
    "RoundResult",
    "build_dns_query",
    "default_counter",
    "parse_dns_response",
    "probe",
    "probe_round",
    "resolve_a",
]

log = logging.getLogger(__name__)

T = TypeVar("T")

IPV4_HEADER = 20
IPV6_HEADER = 40
UDP_HEADER = 8
ICMP_HEADER = 8
TCP_HEADER_TS = 32  # 20 + 12 bytes of timestamp option (Linux default)
TCP_SYN_EXTRA = 8  # a SYN carries MSS, SACK-permitted, timestamps, window scale: 40 bytes
TCP_CLOSE_SEGMENTS_OUT = 2  # our FIN, our ACK of theirs
TCP_CLOSE_SEGMENTS_IN = 2  # their ACK of our FIN, their FIN

_TCP_INFO_LEN = 232
_TCP_SYN_SENT = 2
_TCP_CLOSE = 7
_IFNAMSIZ = 16


# --------------------------------------------------------------------------- options, results


@dataclass(frozen=True, slots=True)
class ProbeOptions:
    """Knobs shared by all probes of a round.

    ``ssl``: True verifies certificates against the system store (default);
    an ``ssl.SSLContext`` (e.g. trusting a test CA) is used as given; False
    disables verification — for tests only.
    ``dns_servers``: resolvers reachable over the probed uplink, used (bound to
    it) for targets given by host name. Empty → the system resolver.
    """

    attempts: int = 3
    retry_after_s: float = 0.3
    ssl: ssl.SSLContext | bool = True
    dns_servers: tuple[str, ...] = ()
    icmp_payload: int = 16
    http_max_body: int = 4096
    user_agent: str = "storebox-probe/1"

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ProbeConfigError("attempts", self.attempts, "must be at least 1")
        if not self.retry_after_s > 0:
            raise ProbeConfigError("retry_after_s", self.retry_after_s, "must be > 0")
        if not 0 <= self.icmp_payload <= 1400:
            raise ProbeConfigError("icmp_payload", self.icmp_payload, "must be 0..1400")
        for server in self.dns_servers:
            try:
                ipaddress.ip_address(server)
            except ValueError:
                raise ProbeConfigError("dns_servers", server, "must be an IP address") from None


@dataclass(frozen=True, slots=True)
class ProbeResult:
    target: ProbeTarget
    interface: str
    ok: bool
    latency_ms: float | None
    error: str | None
    bytes_sent: int = 0
    bytes_received: int = 0


@dataclass(frozen=True, slots=True)
class RoundResult:
    """All probes of one round on one interface; ``ok`` when ``quorum`` succeeded."""

    interface: str
    quorum: int
    results: tuple[ProbeResult, ...]

    @property
    def attempted(self) -> int:
        return len(self.results)

    @property
    def succeeded(self) -> int:
        return sum(1 for r in self.results if r.ok)

    @property
    def ok(self) -> bool:
        return self.succeeded >= self.quorum

    @property
    def loss(self) -> float:
        """Fraction of probes that failed, 0.0..1.0."""
        return 1.0 - self.succeeded / self.attempted if self.results else 1.0

    @property
    def median_latency_ms(self) -> float | None:
        lat = [r.latency_ms for r in self.results if r.ok and r.latency_ms is not None]
        return statistics.median(lat) if lat else None

    @property
    def bytes_sent(self) -> int:
        return sum(r.bytes_sent for r in self.results)

    @property
    def bytes_received(self) -> int:
        return sum(r.bytes_received for r in self.results)

    @property
    def errors(self) -> dict[str, str]:
        return {r.target.text: r.error for r in self.results if r.error is not None}


@dataclass(frozen=True, slots=True)
class ByteTotals:
    sent: int = 0
    received: int = 0
    probes: int = 0

    @property
    def total(self) -> int:
        return self.sent + self.received


class ByteCounter:
    """Bytes spent on probing, per interface (IP level, estimates as documented)."""

    def __init__(self) -> None:
        self._totals: dict[str, ByteTotals] = {}

    def add(self, interface: str, sent: int, received: int) -> None:
        t = self._totals.get(interface, ByteTotals())
        self._totals[interface] = ByteTotals(t.sent + sent, t.received + received, t.probes + 1)

    def totals(self, interface: str) -> ByteTotals:
        return self._totals.get(interface, ByteTotals())

    def snapshot(self) -> dict[str, ByteTotals]:
        return dict(self._totals)

    def reset(self, interface: str | None = None) -> None:
        if interface is None:
            self._totals.clear()
        else:
            self._totals.pop(interface, None)


_DEFAULT_COUNTER = ByteCounter()


def default_counter() -> ByteCounter:
    """The process-wide counter used when a probe is not given one."""
    return _DEFAULT_COUNTER


# --------------------------------------------------------------------------- failures


class _ProbeFailed(Exception):
    """A definitive, expected failure (an answer that says no)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _describe(exc: BaseException, interface: str) -> str:
    if isinstance(exc, _ProbeFailed):
        return exc.reason
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        return f"TLS certificate rejected: {exc.certificate_error}"
    if isinstance(exc, aiohttp.ClientSSLError):
        return f"TLS error: {exc}"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return _describe(exc.os_error, interface)
    if isinstance(exc, ssl.SSLError):
        return f"TLS error: {exc.reason or exc}"
    if isinstance(exc, socket.gaierror):
        return f"name resolution failed: {exc.strerror}"
    if isinstance(exc, OSError) and exc.errno is not None:
        if exc.errno == errno.ENODEV:
            return f"no such interface {interface!r}"
        if exc.errno == errno.ENETUNREACH:
            return f"network unreachable (no route via {interface!r}?)"
        name = errno.errorcode.get(exc.errno, str(exc.errno))
        return f"{os.strerror(exc.errno).lower()} ({name})"
    if isinstance(exc, aiohttp.ClientError):
        return f"{type(exc).__name__}: {exc}"
    return f"{type(exc).__name__}: {exc}"


# --------------------------------------------------------------------------- sockets


def _check_interface(interface: str) -> None:
    if (
        not isinstance(interface, str)
        or not 0 < len(interface) < _IFNAMSIZ
        or "/" in interface
        or any(c.isspace() for c in interface)
    ):
        raise ProbeConfigError("interface", interface, "not a valid interface name")


def _bind_to_device(sock: socket.socket, interface: str) -> None:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, interface.encode())


def _bound_socket(family: int, type_: int, proto: int, interface: str) -> socket.socket:
    sock = socket.socket(family, type_, proto)
    try:
        _bind_to_device(sock, interface)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def _family_of(addr: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ipaddress.ip_address(addr).version == 6 else socket.AF_INET


def _ip_header(family: int) -> int:
    return IPV6_HEADER if family == socket.AF_INET6 else IPV4_HEADER


class _TcpBytes:
    """Sums TCP wire bytes of the sockets of one probe, from TCP_INFO."""

    def __init__(self) -> None:
        self.sent = 0
        self.received = 0
        self._open: list[_AccountingSocket] = []

    def track(self, sock: _AccountingSocket) -> None:
        self._open.append(sock)

    def account(self, sock: socket.socket) -> None:
        try:
            info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _TCP_INFO_LEN)
        except OSError:
            return
        if len(info) < 144:
            return
        state = info[0]
        bytes_acked, bytes_received = struct.unpack_from("=QQ", info, 120)
        segs_out, segs_in = struct.unpack_from("=II", info, 136)
        payload_out = (
            struct.unpack_from("=Q", info, 200)[0] if len(info) >= 208 else max(0, bytes_acked - 1)
        )
        hdr = _ip_header(sock.family) + TCP_HEADER_TS
        sent = payload_out + segs_out * hdr + (TCP_SYN_EXTRA if segs_out else 0)
        received = bytes_received + segs_in * hdr + (TCP_SYN_EXTRA if segs_in else 0)
        if segs_in and state not in (_TCP_SYN_SENT, _TCP_CLOSE):
            sent += TCP_CLOSE_SEGMENTS_OUT * hdr
            received += TCP_CLOSE_SEGMENTS_IN * hdr
        self.sent += sent
        self.received += received

    def finish(self) -> None:
        """Account every tracked socket not closed yet (snapshot before its close)."""
        for sock in self._open:
            sock.account_now()
        self._open.clear()


class _AccountingSocket(socket.socket):
    """A socket that reports its TCP_INFO byte counts once, at the latest on close()."""

    def __init__(self, family: int, type_: int, proto: int, sink: _TcpBytes) -> None:
        super().__init__(family, type_, proto)
        self._sink = sink
        self._accounted = False

    def account_now(self) -> None:
        if not self._accounted and self.fileno() >= 0:
            self._accounted = True
            self._sink.account(self)

    def close(self) -> None:
        self.account_now()
        super().close()


def _accounting_socket(
    family: int, type_: int, proto: int, interface: str, sink: _TcpBytes
) -> _AccountingSocket:
    sock = _AccountingSocket(family, type_, proto, sink)
    try:
        _bind_to_device(sock, interface)
        sock.setblocking(False)
    except BaseException:
        sock._accounted = True
        sock.close()
        raise
    sink.track(sock)
    return sock


# --------------------------------------------------------------------------- hedging


async def _hedged(attempt: Callable[[], Awaitable[T]], attempts: int, retry_after_s: float) -> T:
    """Start ``attempt``; while nothing has answered, start another every retry_after_s.

    The first attempt to return wins; the first to raise fails the whole (an
    error is an answer, not loss). Losers are cancelled and awaited.
    """
    tasks: list[asyncio.Task[T]] = []
    try:
        while True:
            if len(tasks) < attempts:
                tasks.append(asyncio.ensure_future(attempt()))
            wait = retry_after_s if len(tasks) < attempts else None
            done, _ = await asyncio.wait(tasks, timeout=wait, return_when=asyncio.FIRST_COMPLETED)
            if done:
                winners = [t for t in done if not t.cancelled() and t.exception() is None]
                return (winners[0] if winners else next(iter(done))).result()
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


# --------------------------------------------------------------------------- DNS


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


_RCODES = {1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP", 5: "REFUSED"}


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


async def _udp_exchange(
    sock: socket.socket,
    payload: bytes,
    accept: Callable[[bytes], T | None],
    options: ProbeOptions,
    wire: list[int],
    overhead: int,
    make_payload: Callable[[int], bytes] | None = None,
    recv_overhead: int | None = None,
) -> T:
    """Send, resend every retry_after_s (up to attempts), return the first accepted reply.

    ``wire`` accumulates [sent, received] bytes including ``overhead`` per datagram
    (``recv_overhead`` for received ones when it differs: raw IPv4 sockets
    receive the IP header).
    """
    in_overhead = overhead if recv_overhead is None else recv_overhead
    loop = asyncio.get_running_loop()
    sends = 0
    while True:
        if sends < options.attempts:
            data = make_payload(sends) if make_payload is not None else payload
            await loop.sock_sendall(sock, data)
            wire[0] += len(data) + overhead
            sends += 1
        wait = options.retry_after_s if sends < options.attempts else None
        try:
            async with asyncio.timeout(wait):
                while True:
                    reply = await loop.sock_recv(sock, 4096)
                    wire[1] += len(reply) + in_overhead
                    result = accept(reply)
                    if result is not None:
                        return result
        except TimeoutError:
            continue


async def _dns_query(
    server: str, qname: str, interface: str, options: ProbeOptions, wire: list[int]
) -> DnsAnswer:
    family = _family_of(server)
    query = build_dns_query(secrets.randbits(16), qname)
    sock = _bound_socket(family, socket.SOCK_DGRAM, 0, interface)
    try:
        sock.connect((server, 53))  # UDP: no handshake, only sets the peer filter
        return await _udp_exchange(
            sock,
            query,
            lambda data: parse_dns_response(data, query),
            options,
            wire,
            UDP_HEADER + _ip_header(family),
        )
    finally:
        sock.close()


async def resolve_a(
    host: str, interface: str, options: ProbeOptions, wire: list[int] | None = None
) -> list[str]:
    """Addresses for ``host``: itself if an IP, else A records via the uplink's resolvers.

    Without ``options.dns_servers`` this falls back to the system resolver,
    which is *not* bound to the interface (see module docs).
    """
    try:
        ipaddress.ip_address(host)
        return [host]
    except ValueError:
        pass
    wire = wire if wire is not None else [0, 0]
    if not options.dns_servers:
        infos = await asyncio.get_running_loop().getaddrinfo(host, None, type=socket.SOCK_STREAM)
        return list(dict.fromkeys(str(info[4][0]) for info in infos))
    last: _ProbeFailed | None = None
    for server in options.dns_servers:
        answer = await _dns_query(server, host, interface, options, wire)
        if answer.rcode == 0 and answer.addresses:
            return list(answer.addresses)
        last = _ProbeFailed(
            f"cannot resolve {host!r} via {server}: "
            + (_RCODES.get(answer.rcode, f"rcode {answer.rcode}") if answer.rcode else "no A")
        )
    assert last is not None
    raise last


# --------------------------------------------------------------------------- probes


async def _probe_dns(
    target: ProbeTarget, interface: str, options: ProbeOptions, wire: list[int]
) -> None:
    assert target.qname is not None
    answer = await _dns_query(target.host, target.qname, interface, options, wire)
    if answer.rcode != 0:
        raise _ProbeFailed(f"DNS {_RCODES.get(answer.rcode, f'rcode {answer.rcode}')}")


async def _probe_tcp(
    target: ProbeTarget, interface: str, options: ProbeOptions, wire: list[int]
) -> None:
    assert target.port is not None
    addr = (await resolve_a(target.host, interface, options, wire))[0]
    family = _family_of(addr)
    sink = _TcpBytes()
    loop = asyncio.get_running_loop()

    async def connect_once() -> None:
        sock = _accounting_socket(family, socket.SOCK_STREAM, 0, interface, sink)
        try:
            await loop.sock_connect(sock, (addr, target.port))
        finally:
            sock.close()

    try:
        await _hedged(connect_once, options.attempts, options.retry_after_s)
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
        return _bound_socket(family, socket.SOCK_DGRAM, proto, interface), False
    except PermissionError:
        pass
    except OSError as exc:
        if exc.errno not in (errno.EACCES, errno.EPERM, errno.EPROTONOSUPPORT):
            raise
    return _bound_socket(family, socket.SOCK_RAW, proto, interface), True


async def _probe_icmp(
    target: ProbeTarget, interface: str, options: ProbeOptions, wire: list[int]
) -> None:
    addr = (await resolve_a(target.host, interface, options, wire))[0]
    family = _family_of(addr)
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

        def accept(data: bytes) -> bool | None:
            if raw and not v6:
                data = data[(data[0] & 0x0F) * 4 :] if data else data
            if len(data) < 8:
                return None
            kind, _code, _csum, rid, rseq = struct.unpack_from("!BBHHH", data)
            if kind != echo_reply or rid != ident:
                return None
            if (rseq - seq0) & 0xFFFF >= options.attempts or data[8:] != body:
                return None
            return True

        header = _ip_header(family)
        recv_header = 0 if raw and not v6 else header
        await _udp_exchange(sock, b"", accept, options, wire, header, make, recv_header)
    finally:
        sock.close()


class _StaticResolver(AbstractResolver):
    """Hands aiohttp the addresses we already resolved over the probed uplink."""

    def __init__(self, host: str, addresses: list[str]) -> None:
        self._host = host
        self._addresses = addresses

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        if host != self._host:
            raise OSError(errno.EHOSTUNREACH, f"unexpected host {host!r}")
        return [
            ResolveResult(
                hostname=host,
                host=a,
                port=port,
                family=_family_of(a),
                proto=0,
                flags=socket.AI_NUMERICHOST,
            )
            for a in self._addresses
        ]

    async def close(self) -> None:
        return None


async def _probe_http(
    target: ProbeTarget, interface: str, options: ProbeOptions, wire: list[int]
) -> None:
    assert target.url is not None
    url: str = target.url
    addresses = await resolve_a(target.host, interface, options, wire)
    sinks: list[_TcpBytes] = []

    async def get_once() -> None:
        sink = _TcpBytes()  # one per attempt: a winner's snapshot must not freeze a loser's
        sinks.append(sink)

        def factory(addr_info: Any) -> socket.socket:
            family, type_, proto = addr_info[0], addr_info[1], addr_info[2]
            return _accounting_socket(family, type_, proto, interface, sink)

        connector = aiohttp.TCPConnector(
            socket_factory=factory,
            resolver=_StaticResolver(target.host, addresses),
            ssl=options.ssl if target.kind is TargetKind.HTTPS else False,
            force_close=True,
            use_dns_cache=False,
            happy_eyeballs_delay=None,
        )
        async with (
            aiohttp.ClientSession(
                connector=connector,
                timeout=aiohttp.ClientTimeout(total=None),
                headers={"User-Agent": options.user_agent},
                skip_auto_headers=("Accept-Encoding",),
            ) as session,
            session.get(url, allow_redirects=False) as resp,
        ):
            await resp.content.read(options.http_max_body)
            sink.finish()
            if not 200 <= resp.status < 300:
                raise _ProbeFailed(f"HTTP {resp.status}")

    try:
        await _hedged(get_once, options.attempts, options.retry_after_s)
    finally:
        for sink in sinks:
            sink.finish()
            wire[0] += sink.sent
            wire[1] += sink.received


_PROBES: dict[
    TargetKind, Callable[[ProbeTarget, str, ProbeOptions, list[int]], Awaitable[None]]
] = {
    TargetKind.TCP: _probe_tcp,
    TargetKind.DNS: _probe_dns,
    TargetKind.HTTP: _probe_http,
    TargetKind.HTTPS: _probe_http,
    TargetKind.ICMP: _probe_icmp,
}


def _check_timeout(timeout_s: float) -> None:
    if not (isinstance(timeout_s, int | float) and 0 < timeout_s <= 60):
        raise ProbeConfigError("timeout_s", timeout_s, "must be > 0 and <= 60 seconds")


async def probe(
    target: ProbeTarget,
    interface: str,
    timeout_s: float,
    *,
    options: ProbeOptions | None = None,
    counter: ByteCounter | None = None,
) -> ProbeResult:
    """Run one probe through ``interface`` with a hard deadline; never raises for
    network failures."""
    _check_interface(interface)
    _check_timeout(timeout_s)
    opts = options if options is not None else ProbeOptions()
    wire = [0, 0]
    loop = asyncio.get_running_loop()
    started = loop.time()
    error: str | None = None
    try:
        async with asyncio.timeout(timeout_s):
            await _PROBES[target.kind](target, interface, opts, wire)
    except TimeoutError:
        error = f"no answer within {timeout_s:g}s"
    except (OSError, aiohttp.ClientError, _ProbeFailed) as exc:
        error = _describe(exc, interface)
    except ProbeConfigError:
        raise
    except Exception as exc:  # a bug must not take the monitor down; make it loud
        log.exception("probe %s via %s crashed", target.text, interface)
        error = f"internal error: {type(exc).__name__}: {exc}"
    elapsed_ms = (loop.time() - started) * 1000.0
    (counter if counter is not None else _DEFAULT_COUNTER).add(interface, wire[0], wire[1])
    return ProbeResult(
        target=target,
        interface=interface,
        ok=error is None,
        latency_ms=elapsed_ms if error is None else None,
        error=error,
        bytes_sent=wire[0],
        bytes_received=wire[1],
    )


async def probe_round(
    targets: Sequence[ProbeTarget],
    interface: str,
    timeout_s: float,
    quorum: int,
    *,
    options: ProbeOptions | None = None,
    counter: ByteCounter | None = None,
) -> RoundResult:
    """Probe all ``targets`` concurrently through ``interface``; ok when >= quorum succeed."""
    if not targets:
        raise ProbeConfigError("targets", list(targets), "at least one target is needed")
    if not 1 <= quorum <= len(targets):
        raise ProbeConfigError("quorum", quorum, f"must be 1..{len(targets)} (number of targets)")
    _check_interface(interface)
    _check_timeout(timeout_s)
    results = await asyncio.gather(
        *(probe(t, interface, timeout_s, options=options, counter=counter) for t in targets)
    )
    return RoundResult(interface=interface, quorum=quorum, results=tuple(results))
