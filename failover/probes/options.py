"""Knobs shared by all probes of a round (checked on construction)."""

from __future__ import annotations

import ipaddress
import ssl
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from failover.errors import ProbeConfigError
from failover.probes.keep import ProbeConnections

__all__ = ["ProbeOptions"]


@dataclass(frozen=True, slots=True)
class ProbeOptions:
    """Knobs shared by all probes of a round.

    ``ssl``: True verifies certificates against the system store (default);
    an ``ssl.SSLContext`` (e.g. trusting a test CA) is used as given; False
    disables verification — for tests only.
    ``dns_servers``: resolvers reachable over the probed uplink, used (bound to
    it) for targets given by host name. ``resolvers``: more of them, read at every
    resolution (those the uplink learnt: DHCP, its modem's data call; they change
    while the box runs), asked after ``dns_servers``. With neither → the system
    resolver. ``connections``: where HTTP(S) probes keep their connection between
    probes and names their addresses for a while (``probes.keep``, #13); its owner
    closes it. None: every probe resolves and connects afresh.
    """

    attempts: int = 3
    retry_after_s: float = 0.3
    ssl: ssl.SSLContext | bool = True
    dns_servers: tuple[str, ...] = ()
    icmp_payload: int = 16
    http_max_body: int = 4096
    user_agent: str = "storebox-probe/1"
    resolvers: Callable[[], Sequence[str]] | None = None
    connections: ProbeConnections | None = None

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

    def servers(self) -> tuple[str, ...]:
        """The resolvers to ask now: ``dns_servers``, then the learnt ``resolvers`` that
        are IP addresses (what a provider gives is not checked on construction), once
        each."""
        learnt = tuple(self.resolvers()) if self.resolvers is not None else ()
        return tuple(dict.fromkeys((*self.dns_servers, *filter(_is_address, learnt))))


def _is_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True
