"""Flush the connection-tracking entries pinned to an uplink traffic has left.

Why: a masqueraded LAN flow is bound to the uplink address it was NATed to when it
started. After the routes move, its packets leave through the new uplink with the old
source address and die silently (or, after a failback, stay on the metered LTE link
for as long as the flow lives). Deleting its conntrack entry makes the next packet a
new flow: NATed through the new uplink, or reset so the application reconnects.

Which entries: exactly those whose *reply* direction is addressed to one of the dead
uplink's addresses (`conntrack -D --reply-dst ADDR`, per address and family):

- LAN flows masqueraded through that uplink (orig `client -> server`, reply
  `server -> uplink address`);
- the box's own connections sourced from that address (probes bound to the
  interface, the payment forwarder while that uplink was active), whose reply
  goes to the same address.

Nothing else: not flows through the other uplink, not LAN-internal or loopback flows,
not inbound connections to other addresses. Never call this before the route change
(the OPNsense failure: flows re-created on the old path), and never flush everything.

The addresses are the interface's global addresses now, plus the ones seen on it
earlier (`addresses_of`) -- a dead uplink has often lost its DHCP address already.

Uses the conntrack-tools CLI (Debian package `conntrack`) rather than pyroute2's
NFCTSocket: the CLI's filtering and deletion are what operators use and trust, and it
reports the count. `netns=` runs it in a named network namespace (tests) via nsenter.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv6Address, ip_address
from typing import Any

from failover.errors import ConntrackError, RouteConfigError
from failover.routes import interface_name_problem
from failover.routes_netlink import Netlink

_DELETED = re.compile(r"(\d+) flow entries have been deleted")

IPAddress = IPv4Address | IPv6Address


@dataclass(frozen=True)
class FlushResult:
    """What one flush deleted."""

    interface: str | None
    deleted: int
    per_address: dict[str, int] = field(default_factory=dict)

    @property
    def addresses(self) -> list[str]:
        return list(self.per_address)

    def as_dict(self) -> dict[str, Any]:
        return {"interface": self.interface, "deleted": self.deleted,
                "per_address": dict(self.per_address)}


class ConntrackFlusher:
    """Deletes the conntrack entries that point at one uplink's addresses."""

    def __init__(self, *, netns: str | None = None, conntrack: str = "conntrack",
                 timeout: float = 10.0, netlink: Netlink | None = None) -> None:
        self.netns = netns
        self.conntrack = conntrack
        self.timeout = timeout
        self._netlink = netlink or Netlink(netns)
        self._owns_netlink = netlink is None
        self._seen: dict[str, set[IPAddress]] = {}

    async def addresses_of(self, interface: str) -> list[IPAddress]:
        """The interface's global addresses now; remembered for a later flush."""
        _check_interface(interface)
        state = await self._netlink.state(())
        link = state.links.get(interface)
        current = [ip_address(a) for a in link.global_addresses()] if link else []
        self._seen.setdefault(interface, set()).update(current)
        return current

    async def flush_uplink(self, interface: str,
                           addresses: Iterable[str | IPAddress] | None = None) -> FlushResult:
        """Flush entries pointing at `interface`'s addresses (given, or current plus
        remembered ones). Call it after the routes have moved away from `interface`."""
        _check_interface(interface)
        if addresses is None:
            chosen = set(await self.addresses_of(interface)) | self._seen.get(interface, set())
        else:
            chosen = {_address(a) for a in addresses}
        result = await self.flush_addresses(chosen)
        return FlushResult(interface, result.deleted, result.per_address)

    async def flush_addresses(self, addresses: Iterable[str | IPAddress]) -> FlushResult:
        """Flush entries whose reply direction goes to any of `addresses`."""
        per_address: dict[str, int] = {}
        for address in sorted({_address(a) for a in addresses}, key=lambda a: (a.version, a)):
            if address.is_link_local or address.is_loopback or address.is_unspecified:
                continue
            per_address[str(address)] = await self._delete(address)
        return FlushResult(None, sum(per_address.values()), per_address)

    async def _delete(self, address: IPAddress) -> int:
        family = "ipv4" if address.version == 4 else "ipv6"
        command = [self.conntrack, "-D", "-f", family, "--reply-dst", str(address)]
        if self.netns is not None:
            command = ["nsenter", f"--net={_netns_path(self.netns)}", "--", *command]
        try:
            proc = await asyncio.create_subprocess_exec(
                *command, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE)
        except FileNotFoundError as exc:
            raise ConntrackError(
                command, None,
                f"{exc.filename!r} not found (is conntrack installed? Debian package conntrack)",
            ) from exc
        try:
            async with asyncio.timeout(self.timeout):
                out, err = await proc.communicate()
        except TimeoutError as exc:
            proc.kill()
            await proc.wait()
            raise ConntrackError(command, None, f"no answer within {self.timeout} s") from exc
        text = err.decode(errors="replace") + out.decode(errors="replace")
        match = _DELETED.search(text)
        # conntrack exits 1 when it deleted nothing; the summary line says so.
        if match is None or proc.returncode not in (0, 1):
            if proc.returncode == 127:
                text += " (is conntrack installed? Debian package conntrack)"
            raise ConntrackError(command, proc.returncode, text)
        return int(match.group(1))

    async def close(self) -> None:
        if self._owns_netlink:
            await self._netlink.close()


def _netns_path(netns: str) -> str:
    return netns if "/" in netns else f"/run/netns/{netns}"


def _check_interface(interface: str) -> None:
    problem = interface_name_problem(interface)
    if problem is not None:
        raise RouteConfigError("interface", interface, problem)


def _address(value: str | IPAddress) -> IPAddress:
    if isinstance(value, IPv4Address | IPv6Address):
        return value
    try:
        return ip_address(str(value).strip())
    except ValueError:
        raise RouteConfigError("address", value, "is not an IP address") from None
