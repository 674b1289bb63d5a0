"""What probing costs on the wire, per interface (IP-level bytes; the figures are in
the package docs: what an LTE operator bills, link-layer framing not counted)."""

from __future__ import annotations

import socket
from dataclasses import dataclass

__all__ = ["ByteCounter", "ByteTotals", "default_counter", "ip_header"]

IPV4_HEADER = 20
IPV6_HEADER = 40
UDP_HEADER = 8
ICMP_HEADER = 8
TCP_HEADER_TS = 32  # 20 + 12 bytes of timestamp option (Linux default)
TCP_SYN_EXTRA = 8  # a SYN carries MSS, SACK-permitted, timestamps, window scale: 40 bytes
TCP_CLOSE_SEGMENTS_OUT = 2  # our FIN, our ACK of theirs
TCP_CLOSE_SEGMENTS_IN = 2  # their ACK of our FIN, their FIN


def ip_header(family: int) -> int:
    return IPV6_HEADER if family == socket.AF_INET6 else IPV4_HEADER


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
