"""Which resolvers the LAN's DNS forwards to: the active uplink's own, then public ones.

Each uplink's own resolvers (configured, else learnt from NetworkManager, else for LTE
the modem's data call's) are `firmware.uplink_dns`'s, the same the probes use. They are
read again every time the LAN's upstream is decided, so a DHCP renewal (or a new data
call) that changes them is followed.

The upstream while an uplink is active is that uplink's resolvers, each asked through
that uplink's interface (dnsmasq's `server=ADDRESS@INTERFACE`, SO_BINDTODEVICE, as the
probes are bound), followed by `lan.fallback_dns` through the same interface, in that
order (dnsmasq's `strict-order`: left to itself dnsmasq uses whichever server answered
fastest in its last test, often a public one). dnsmasq moves to the next server only
when a client repeats a query, so a dead first resolver would cost every new name a
client timeout (5 s for glibc): the LAN component asks the uplink's own resolvers itself
(`answering`, one query bound to the uplink every few seconds) and, while none answers,
puts the fallback first. So when only the active ISP's resolver dies the LAN keeps
resolving through the fallback, over the same line, and goes back to the ISP's resolver
when it answers again.

Why a public fallback and not the other uplink's resolvers: an ISP's resolver answers
only its own customers (open resolvers were closed against amplification attacks), so
the LTE carrier's resolver is reached only over LTE. Using it while wired carries the
shop would send every LAN query over the metered standby link, through a path the
failover engine does not steer and probes only lightly, and its answers for CDN names
point into the carrier's network while the traffic then goes out of wired. A resolver
failure is not a line failure: the line still works, and a public resolver reached over
it keeps everything on it. A box whose operator wants no public resolver sets
`lan.fallback_dns = []` and accepts that the ISP's resolver failing is an outage for
the LAN's names.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dbus_fast.aio import MessageBus


from failover.errors import FailoverError
from failover.probes.dns import dns_query
from failover.probes.options import ProbeOptions
from firmware.config import Config
from firmware.uplink_dns import Learn, Uplink, own_resolvers

__all__ = ["Learn", "NetworkManagerResolvers", "Uplink", "Upstream", "answering",
           "upstream_for"]

log = logging.getLogger("storebox.lan")

NM_BUS = "org.freedesktop.NetworkManager"


#: What the check asks a resolver (any answer, even "no such name", shows it serves).
CHECK_NAME = "a.root-servers.net"


@dataclass(frozen=True, slots=True)
class Upstream:
    """Where the LAN's queries go while `uplink` is active: its own resolvers (`own`),
    then `fallback`, every one asked through `interface`; the fallback first while none
    of its own answers (`own_answering` False)."""

    uplink: Uplink
    interface: str
    own: tuple[str, ...]
    fallback: tuple[str, ...]
    own_answering: bool = True

    @property
    def servers(self) -> tuple[str, ...]:
        first, then = (self.own, self.fallback) if self.own_answering else (self.fallback,
                                                                             self.own)
        return tuple(dict.fromkeys((*first, *then)))


async def answering(servers: tuple[str, ...], interface: str, timeout_s: float = 1.0) -> bool:
    """Whether any of `servers` answers a query sent through `interface` (bound to it, as
    the probes are) within `timeout_s`; True when there are none to ask."""
    if not servers:
        return True
    options = ProbeOptions(attempts=2, retry_after_s=timeout_s / 2)
    for server in servers:
        try:
            async with asyncio.timeout(timeout_s):
                reply = await dns_query(server, CHECK_NAME, interface, options, [0, 0])
        except (TimeoutError, OSError, FailoverError):
            continue
        if reply.rcode in (0, 3):  # an answer, or "no such name": it serves
            return True
    return False


def upstream_for(config: Config, uplink: Uplink, learnt: tuple[str, ...] = (),
                 modem: tuple[str, ...] = ()) -> Upstream:
    """The upstream while `uplink` is active: its own resolvers (`own_resolvers`: its
    configured ones, else the `learnt`, NetworkManager's, else for LTE the `modem`'s, its
    data call's, `AT+CGCONTRDP`), then `lan.fallback_dns`."""
    link = config.wired if uplink == "wired" else config.lte
    return Upstream(uplink, link.interface, own_resolvers(config, uplink, learnt, modem),
                    tuple(config.lan.fallback_dns))


class NetworkManagerResolvers:
    """The nameservers NetworkManager holds for a device (its IP4Config), over D-Bus.

    Anything that goes wrong (no bus, no such device, no IPv4 configuration) gives ():
    the LAN then forwards to the fallback alone, and the first failure is logged."""

    def __init__(self, bus_address: str | None = None, timeout_s: float = 5.0) -> None:
        self.bus_address = bus_address  # None: DBUS_SYSTEM_BUS_ADDRESS or the default
        self.timeout_s = timeout_s
        self._bus: MessageBus | None = None
        self._warned = False

    async def __call__(self, interface: str) -> tuple[str, ...]:
        try:
            async with asyncio.timeout(self.timeout_s):
                return await self._nameservers(interface)
        except (OSError, EOFError, TimeoutError, LookupError, ValueError) as exc:
            self._bus = None
            if not self._warned:
                log.warning("cannot learn %s's resolvers from NetworkManager: %r",
                            interface, exc)
                self._warned = True
            return ()

    async def close(self) -> None:
        if self._bus is not None:
            self._bus.disconnect()
            self._bus = None

    async def _nameservers(self, interface: str) -> tuple[str, ...]:
        device = await self._call(
            "/org/freedesktop/NetworkManager", NM_BUS, "GetDeviceByIpIface", "s", [interface])
        config = await self._property(str(device), f"{NM_BUS}.Device", "Ip4Config")
        if config in ("", "/"):
            return ()
        data = await self._property(str(config), f"{NM_BUS}.IP4Config", "NameserverData")
        found = [str(entry["address"].value) for entry in data if "address" in entry]
        return tuple(str(ipaddress.ip_address(a)) for a in found)

    async def _property(self, path: str, interface: str, name: str) -> Any:
        variant = await self._call(path, "org.freedesktop.DBus.Properties", "Get", "ss",
                                   [interface, name])
        return variant.value

    async def _call(self, path: str, interface: str, member: str, signature: str,
                    body: list[Any]) -> Any:
        # imported here: only the NetworkManager backend needs D-Bus (a box without it
        # never loads dbus_fast; its modules are ~3 MB of the daemon's RSS)
        from dbus_fast import BusType, Message, MessageType
        from dbus_fast.aio import MessageBus

        if self._bus is None or not self._bus.connected:
            self._bus = await MessageBus(bus_address=self.bus_address,
                                         bus_type=BusType.SYSTEM).connect()
        reply = await self._bus.call(Message(destination=NM_BUS, path=path,
                                             interface=interface, member=member,
                                             signature=signature, body=body))
        if reply is None or reply.message_type == MessageType.ERROR:
            error = reply.error_name if reply is not None else "no reply"
            raise LookupError(f"{member}({', '.join(map(repr, body))}): {error}")
        return reply.body[0]
