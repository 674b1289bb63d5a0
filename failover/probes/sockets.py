"""Sockets bound to one uplink (``SO_BINDTODEVICE``, package docs), and TCP sockets
that report their wire bytes from ``TCP_INFO`` before they close."""

from __future__ import annotations

import contextlib
import ipaddress
import socket
import struct

from failover.errors import ProbeConfigError
from failover.probes.accounting import (
    TCP_CLOSE_SEGMENTS_IN,
    TCP_CLOSE_SEGMENTS_OUT,
    TCP_HEADER_TS,
    TCP_SYN_EXTRA,
    ip_header,
)

__all__ = [
    "KeptBytes",
    "TcpBytes",
    "accounting_socket",
    "bound_socket",
    "check_interface",
    "family_of",
    "tcp_wire_bytes",
]

_TCP_INFO_LEN = 232
_TCP_SYN_SENT = 2
_TCP_CLOSE = 7
_IFNAMSIZ = 16


def check_interface(interface: str) -> None:
    if (
        not isinstance(interface, str)
        or not 0 < len(interface) < _IFNAMSIZ
        or "/" in interface
        or any(c.isspace() for c in interface)
    ):
        raise ProbeConfigError("interface", interface, "not a valid interface name")


def _bind_to_device(sock: socket.socket, interface: str) -> None:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, interface.encode())


def bound_socket(family: int, type_: int, proto: int, interface: str) -> socket.socket:
    sock = socket.socket(family, type_, proto)
    try:
        _bind_to_device(sock, interface)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def family_of(addr: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ipaddress.ip_address(addr).version == 6 else socket.AF_INET


class TcpBytes:
    """Sums TCP wire bytes of the sockets of one probe, from TCP_INFO."""

    def __init__(self) -> None:
        self.sent = 0
        self.received = 0
        self._open: list[_AccountingSocket] = []

    def track(self, sock: _AccountingSocket) -> None:
        self._open.append(sock)

    def account(self, sock: socket.socket) -> None:
        """Add ``sock``'s bytes, with an estimate of the close that follows."""
        wire = tcp_wire_bytes(sock, closing=True)
        if wire is not None:
            self.sent += wire[0]
            self.received += wire[1]

    def finish(self) -> None:
        """Account every tracked socket not closed yet (snapshot before its close)."""
        for sock in self._open:
            sock.account_now()
        self._open.clear()


class KeptBytes(TcpBytes):
    """The wire bytes of kept sockets (several probes each): ``take()`` is what was
    sent and received since the last take, closed sockets (accounted on close) and
    the live ones' ``TCP_INFO`` so far alike, so each probe counts its own share."""

    def __init__(self) -> None:
        super().__init__()
        self._taken = (0, 0)

    def take(self) -> tuple[int, int]:
        self._open = [s for s in self._open if s.fileno() >= 0]
        sent, received = self.sent, self.received
        for sock in self._open:
            wire = tcp_wire_bytes(sock, closing=False)
            if wire is not None:
                sent, received = sent + wire[0], received + wire[1]
        delta = (max(0, sent - self._taken[0]), max(0, received - self._taken[1]))
        self._taken = (max(sent, self._taken[0]), max(received, self._taken[1]))
        return delta

    def shut_down(self) -> None:
        """Shut every open socket down (a FIN now): a transport still waiting for the
        peer's TLS close_notify over a dead path (30 s in asyncio) sees the end at once
        and closes its socket."""
        for sock in self._open:
            if sock.fileno() >= 0:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)


def tcp_wire_bytes(sock: socket.socket, *, closing: bool) -> tuple[int, int] | None:
    """(sent, received) IP bytes of ``sock`` from ``TCP_INFO`` (package docs); with
    ``closing``, plus the FIN/ACK segments of the close that follows. None when the
    kernel has nothing to say (closed, not TCP)."""
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _TCP_INFO_LEN)
    except OSError:
        return None
    if len(info) < 144:
        return None
    state = info[0]
    bytes_acked, bytes_received = struct.unpack_from("=QQ", info, 120)
    segs_out, segs_in = struct.unpack_from("=II", info, 136)
    payload_out = (
        struct.unpack_from("=Q", info, 200)[0] if len(info) >= 208 else max(0, bytes_acked - 1)
    )
    hdr = ip_header(sock.family) + TCP_HEADER_TS
    sent = payload_out + segs_out * hdr + (TCP_SYN_EXTRA if segs_out else 0)
    received = bytes_received + segs_in * hdr + (TCP_SYN_EXTRA if segs_in else 0)
    if closing and segs_in and state not in (_TCP_SYN_SENT, _TCP_CLOSE):
        sent += TCP_CLOSE_SEGMENTS_OUT * hdr
        received += TCP_CLOSE_SEGMENTS_IN * hdr
    return sent, received


class _AccountingSocket(socket.socket):
    """A socket that reports its TCP_INFO byte counts once, at the latest on close()."""

    def __init__(self, family: int, type_: int, proto: int, sink: TcpBytes) -> None:
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


def accounting_socket(
    family: int, type_: int, proto: int, interface: str, sink: TcpBytes
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
