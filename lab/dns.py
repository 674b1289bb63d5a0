"""A tiny authoritative DNS server in a namespace: an ISP's resolver, or a public one.

It answers every A question with one address (`address`), so a client can tell which
resolver answered; `ttl` 0 keeps a forwarder from caching the answer. Other question
types get an empty answer. UDP only, one thread; `queries` counts what it received.
"""

from __future__ import annotations

import select
import socket
import struct
import threading

from lab.netns import inside

__all__ = ["DnsResponder", "answer"]


def _question_end(query: bytes) -> int:
    off = 12
    while off < len(query) and query[off] != 0:
        off += 1 + query[off]
    return off + 5  # the root label, QTYPE, QCLASS


def answer(query: bytes, address: str, ttl: int) -> bytes | None:
    """The response to `query` (one question): `address` for an A question; None when
    the query is malformed."""
    if len(query) < 17:
        return None
    qid, _flags, qdcount = struct.unpack_from("!HHH", query, 0)
    end = _question_end(query)
    if qdcount != 1 or end > len(query):
        return None
    question = query[12:end]
    qtype = struct.unpack_from("!H", query, end - 4)[0]
    records = b""
    if qtype == 1:
        records = (struct.pack("!HHHIH", 0xC00C, 1, 1, ttl, 4)
                   + socket.inet_aton(address))
    header = struct.pack("!HHHHHH", qid, 0x8580, 1, 1 if records else 0, 0, 0)
    return header + question + records


class DnsResponder:
    """Answers DNS over UDP on `listen`:53 in namespace `ns` with `address`."""

    def __init__(self, ns: str, listen: str, address: str, ttl: int = 0) -> None:
        self.address = address
        self.ttl = ttl
        self.queries = 0
        with inside(ns):
            self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.bind((listen, 53))
        self._wake_r, self._wake_w = socket.socketpair()
        self._thread = threading.Thread(target=self._serve, daemon=True,
                                        name=f"dns-{listen}")
        self._thread.start()

    def _serve(self) -> None:
        while True:
            ready, _, _ = select.select([self._sock, self._wake_r], [], [])
            if self._wake_r in ready:
                return
            query, peer = self._sock.recvfrom(4096)
            self.queries += 1
            response = answer(query, self.address, self.ttl)
            if response is not None:
                self._sock.sendto(response, peer)

    def close(self) -> None:
        """Stop answering (a test "kills" a resolver this way); again is harmless."""
        if not self._thread.is_alive():
            return
        self._wake_w.send(b"x")
        self._thread.join(5)
        for s in (self._sock, self._wake_r, self._wake_w):
            s.close()
