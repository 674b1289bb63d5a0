"""The shop LAN's way out: nftables table `inet storebox`, regenerated per uplink change.

storebox owns exactly one table, `inet storebox`, and never reads, flushes or edits any
other. Every change is one `nft -f -` transaction that (re)creates the whole table:

    table inet storebox              # make sure it exists, so that
    delete table inet storebox       # deleting it cannot fail
    table inet storebox { ... }      # the new ruleset

nft applies a file as one netlink batch: either the new table replaces the old one at
once, or (on any error) nothing changes -- there is no instant with half a ruleset.

Ruleset shape (LAN `lan0`, wired `wan0` active, LTE allowlist configured)::

    table inet storebox {
        set lte_allow4 { type ipv4_addr; flags interval; elements = { 198.51.100.10 } }
        set lte_allow6 { type ipv6_addr; flags interval; }
        set modem_mgmt4 { type ipv4_addr; flags interval;
                          elements = { 192.168.0.1, 192.168.1.1, 192.168.8.0/24, ... } }
        set modem_mgmt6 { type ipv6_addr; flags interval; }
        chain prerouting {
            type filter hook prerouting priority mangle; policy accept;
            iifname { "lan0" } ct mark and 0xff00 == 0x100 \
                meta mark set meta mark and 0xffff00ff or 0x100
            iifname { "lan0" } ct mark and 0xff00 == 0x200 \
                meta mark set meta mark and 0xffff00ff or 0x200
        }
        chain modem_guard {
            type filter hook forward priority filter - 1; policy accept;
            iifname { "lan0" } oifname "wwan0" ip daddr @modem_mgmt4 counter drop
            iifname { "lan0" } oifname "wwan0" ip6 daddr @modem_mgmt6 counter drop
        }
        chain forward {
            type filter hook forward priority filter; policy accept;
            iifname { "wan0", "wwan0" } oifname { "lan0" } ct state established,related accept
            iifname { "wan0", "wwan0" } oifname { "lan0" } counter drop
            iifname { "lan0" } oifname "wan0" accept
            iifname { "lan0" } oifname "wwan0" ct mark and 0xff00 == 0x200 \
                ip daddr @lte_allow4 accept
            iifname { "lan0" } oifname "wwan0" ct mark and 0xff00 == 0x200 \
                ip6 daddr @lte_allow6 accept
            iifname { "lan0" } oifname { "wan0", "wwan0" } counter reject with icmpx \
                admin-prohibited
        }
        chain postrouting {
            type nat hook postrouting priority srcnat; policy accept;
            iifname { "lan0" } oifname "wan0" ct mark set ct mark and 0xffff00ff or 0x100 \
                masquerade
        }
    }

With LTE active and the allowlist on, the LAN→LTE rule becomes
`ip daddr @lte_allow4 accept` / `ip6 daddr @lte_allow6 accept` followed by a counted
reject -- established or not, so a flow that started on wired cannot keep spending
the LTE budget. With no active uplink (offline) the LAN reaches no uplink at all.
Traffic that is not between the LAN and an uplink is not this table's business
(policy accept); rejects answer at once, so POS terminals fail fast instead of hanging.
Allowlist entries are IP addresses or CIDR networks; names must be resolved by the
caller (and the DNS servers the LAN uses must be allowlisted if they are on the
internet).

Sticky flows (as OpenWrt's mwan3 does)
--------------------------------------
A LAN flow keeps the uplink it started on until the engine flushes it
(`failover.conntrack`), even when the default route moves meanwhile. Otherwise a flow
whose first packets left through LTE just before a failback has its next packets
routed out of wired; the kernel's NAT sees a masqueraded connection change its output
interface (`nf_nat_oif_changed`), kills the entry and drops the packet, and the
retransmission, masqueraded to the wired address, is answered with a reset.

- `postrouting`: the masquerade of a flow's first packet also records its uplink in
  the conntrack mark, bits `failover.sticky.FLOW_MARK_MASK` (0xff00: wired 0x100, LTE
  0x200; the other bits are kept);
- `prerouting` (priority mangle, before the routing decision): LAN packets of a marked
  flow carry the same bits in their packet mark; `failover.sticky` adds the
  `ip rule fwmark` that routes them through a copy of that uplink's default route;
- `forward`: LAN packets of a flow marked for an uplink that is no longer the active
  one may still leave through it (never offline). Only flows the ruleset accepted and
  masqueraded through that uplink carry its mark, so this lets no new flow out; for
  LTE the allowlist is checked again.

The engine's flush of the uplink left (at once when it died, after a grace period
when it is healthy) ends the stickiness: the flow's next packet makes a new, unmarked
entry that follows the main table.

The box itself (docs/openapi.json)
-----------------------------
`chain input` (hook input, priority filter) is the box's own firewall, in the same table
and so replaced and removed with the rest, atomically::

    chain input {
        type filter hook input priority filter; policy accept;
        iif "lo" accept
        ct state established,related accept       # replies: probes, DNS, gateway, MQTT
        iifname { "lan0" } accept                 # the POS API and the admin services
        iifname { "wan0", "wwan0" } udp sport 67 udp dport 68 accept          # DHCP
        iifname { "wan0", "wwan0" } ip6 saddr fe80::/10 udp sport 547 udp dport 546 accept
        iifname { "wan0", "wwan0" } ip6 hoplimit 255 icmpv6 type \
            { nd-neighbor-solicit, nd-neighbor-advert, nd-router-advert } accept
        iifname { "wan0", "wwan0" } icmpv6 type packet-too-big accept
        iifname { "wan0", "wwan0" } icmp type destination-unreachable \
            icmp code frag-needed accept
        tcp dport { 8470 } counter name "api_refused" drop    # the API, anywhere else
        iifname { "wan0", "wwan0" } counter name "uplink_dropped" drop
    }

With the LAN's DHCP and DNS served (`lan_services`, config `lan.enabled`), the LAN's
queries and DHCP requests are accepted by name before the LAN's blanket accept, and the
same ports are dropped (counted, `lan_services_refused`) from every other interface,
like the API port: no uplink and no other network ever reaches the box's resolver
(an open resolver is an amplifier) or its DHCP server::

        iifname { "lan0" } udp dport { 53, 67 } accept
        iifname { "lan0" } tcp dport 53 accept
        ...
        udp dport { 53, 67 } counter name "lan_services_refused" drop
        tcp dport 53 counter name "lan_services_refused" drop

- Loopback and the LAN interfaces reach everything the box serves (the API on
  `api.listen`, a technician's ssh); nothing else reaches the API port (`api_refused`).
- The uplinks (wired, LTE: the carrier's side of the modem included) take only what
  the box asked for: replies to its own connections (TCP, UDP and ICMP echo of the
  probes -- conntrack follows ping and raw ICMP sockets too -- and ICMP errors about
  them, `related`), DHCP/DHCPv6 client replies and IPv6 neighbour discovery; the rest
  is dropped silently and counted (`uplink_dropped`): no port on the box answers the
  internet, not even ping. A probe reply that arrives just after the engine flushed
  that uplink's conntrack entries is dropped like any unsolicited packet; the probe
  retransmits or fails that round.
- Other interfaces (neither LAN nor uplink) keep everything but the API port.
The table stays when the daemon stops (so does this protection); `remove()` deletes it.

From the daemon's start, not from the first decision: `guard()` runs when the failover
component is built, before the API listens. The engine applies the table only when it
chooses an uplink, and with every uplink dead from the start it never chooses one; so
`guard()` applies the table itself (as in offline mode) when there is none, or replaces
the input chain and the modem's guard of the one the previous run left. Every later
transaction carries both again: they are never absent between decisions.

The modem's own management
--------------------------
An LTE modem that routes (ECM/RNDIS, "HiLink") answers on its own address -- a Quectel
on 192.168.225.1, a Huawei on 192.168.8.1 -- with a web page, sometimes AT commands
over HTTP, reached through the LTE interface. The box may talk to it (the modem driver,
a technician's curl on the box: the output path, not this table's forward chain); the
LAN may not: forwarded LAN packets to `modem_mgmt4`/`modem_mgmt6` out of the LTE
interface are dropped and counted (`modem_blocked`) in a base chain of their own,
`modem_guard`, hooked before the forward chain (a drop there is final): whatever uplink
is active, before any allowlist, and from the daemon's start, even when a table left by
its previous run still forwards the LAN. The sets hold `modem_management` (the daemon passes
`routing.modem_management`: by default 192.168.225.0/24, 192.168.8.0/24, 192.168.0.1 and
192.168.1.1) and the LTE interface's default gateway when it is a private address
(looked up over netlink by `guard()` and `refresh_modem_gateway()`, which the daemon runs
every 10 s: a modem's reconnect may bring another); a public gateway is the carrier's, and
a link-local one is never forwarded.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from ipaddress import IPv4Network, IPv6Network, collapse_addresses, ip_address, ip_network
from typing import TYPE_CHECKING, Any

from failover.errors import NftConfigError, NftError
from failover.routes import UPLINK_NAMES, Uplink, UplinkName, interface_name_problem
from failover.sticky import FLOW_MARK_MASK, FLOW_MARKS

if TYPE_CHECKING:
    from failover.routes_netlink import Netlink

TABLE = "storebox"
FAMILY = "inet"
log = logging.getLogger("storebox.failover")


def _interface(field: str, value: object) -> str:
    problem = interface_name_problem(value)
    if problem is not None:
        raise NftConfigError(field, value, problem)
    assert isinstance(value, str)
    return value


def parse_networks(entries: Iterable[str], field: str = "lte_allowlist"
                   ) -> tuple[list[IPv4Network], list[IPv6Network]]:
    """IP addresses / CIDRs, validated, merged (overlaps collapse), split by family.
    `field` names the config key in errors."""
    if isinstance(entries, str | bytes):
        raise NftConfigError(field, entries, "must be a list of addresses/CIDRs")
    v4: list[IPv4Network] = []
    v6: list[IPv6Network] = []
    for entry in entries:
        if not isinstance(entry, str):
            raise NftConfigError(field, entry, "must be a string")
        try:
            network = ip_network(entry.strip(), strict=True)
        except ValueError as exc:
            raise NftConfigError(field, entry,
                                 f"not an IP address or CIDR network ({exc})") from None
        if network.prefixlen == 0:
            raise NftConfigError(field, entry,
                                 "matches everything; leave the list empty instead")
        if isinstance(network, IPv4Network):
            v4.append(network)
        else:
            v6.append(network)
    return list(collapse_addresses(v4)), list(collapse_addresses(v6))


def _port(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 65536:
        raise NftConfigError("api_ports", value, "must be a TCP port from 1 to 65535")
    return value


def _uplinks(uplinks: Iterable[Uplink] | Mapping[UplinkName, str]) -> dict[UplinkName, str]:
    pairs = (list(uplinks.items()) if isinstance(uplinks, Mapping)
             else [(u.name, u.interface) for u in uplinks])
    result: dict[UplinkName, str] = {}
    for name, interface in pairs:
        if name not in UPLINK_NAMES:
            raise NftConfigError("uplinks", name, f"must be one of {', '.join(UPLINK_NAMES)}")
        result[name] = _interface(f"{name}.interface", interface)
    if not result:
        raise NftConfigError("uplinks", pairs, "at least one uplink needed")
    return result


def private_gateways(routes: Iterable[Mapping[str, Any]]) -> list[str]:
    """The private gateway addresses of route entries (`{"gateway": ADDRESS}`, the shape of
    `ip -j route`'s): a modem's own, in ECM/RNDIS mode (192.168.225.1). Public ones are
    the carrier's and link-local ones never cross the forward path."""
    found = []
    for route in routes:
        try:
            address = ip_address(str(route.get("gateway", "")))
        except ValueError:
            continue
        if address.is_private and not address.is_link_local and not address.is_loopback:
            found.append(str(address))
    return found


def _set(names: Iterable[str]) -> str:
    return "{ " + ", ".join(f'"{n}"' for n in names) + " }"


class LanForwarding:
    """LAN → active uplink forwarding and masquerade in table `inet storebox`."""

    def __init__(self, *, lan_interfaces: Sequence[str],
                 uplinks: Iterable[Uplink] | Mapping[UplinkName, str],
                 lte_allowlist: Iterable[str] | None = None, netns: str | None = None,
                 nft: str = "nft", timeout: float = 10.0,
                 api_ports: Iterable[int] = (), firewall: bool = True,
                 modem_management: Iterable[str] = (),
                 modem_gateway: bool = True, lan_services: bool = False) -> None:
        if isinstance(lan_interfaces, str):
            raise NftConfigError("lan_interfaces", lan_interfaces, "must be a list of names")
        self.lan = [_interface("lan_interfaces", name) for name in lan_interfaces]
        if not self.lan:
            raise NftConfigError("lan_interfaces", list(lan_interfaces), "at least one needed")
        self.uplinks = _uplinks(uplinks)
        clash = set(self.lan) & set(self.uplinks.values())
        if clash or len(set(self.uplinks.values())) != len(self.uplinks):
            raise NftConfigError("lan_interfaces", sorted(clash) or self.uplinks,
                                 "an interface cannot be both LAN and uplink, or two uplinks")
        self.lte_allowlist: tuple[list[IPv4Network], list[IPv6Network]] | None = None
        if lte_allowlist is not None:
            self.lte_allowlist = parse_networks(lte_allowlist)
        self.modem_management = parse_networks(modem_management, "modem_management")
        #: Look up the LTE interface's gateway (`refresh_modem_gateway`): blocked as well
        #: when it is a private address (the modem's own, in ECM/RNDIS mode).
        self.modem_gateway = modem_gateway
        self.lte_gateways: tuple[str, ...] = ()
        self.api_ports = sorted({_port(p) for p in api_ports})
        self.firewall = firewall
        #: The box serves the LAN DNS and DHCP (`lan.enabled`): ports 53 and 67 are taken
        #: from the LAN interfaces only.
        self.lan_services = lan_services
        self.netns = netns
        self.nft = nft
        self.timeout = timeout
        self.active: UplinkName | None = None
        self.also: tuple[UplinkName, ...] = ()
        self.applied = False
        self._lock = asyncio.Lock()  # one transaction at a time: the engine's, the watcher's
        self._netlink: Netlink | None = None  # the gateway lookups' (`_lookup_gateways`)

    def render(self, active: UplinkName | None, also: Sequence[UplinkName] = ()) -> str:
        """The whole transaction that makes `active` (None: no uplink) the LAN's way out.

        `also`: uplinks still allowed and masqueraded for the moment of a switch, so that
        connections opened while the routes move are not refused (make-before-break for
        the LAN as well as for the routes)."""
        for wanted in (active, *also):
            if wanted is not None and wanted not in self.uplinks:
                raise NftConfigError("active", wanted, "is not one of the configured uplinks")
        outs = [n for n in dict.fromkeys((active, *also)) if n is not None]
        lan = _set(self.lan)
        wans = _set(self.uplinks.values())
        lines = [f"table {FAMILY} {TABLE}", f"delete table {FAMILY} {TABLE}",
                 f"table {FAMILY} {TABLE} {{",
                 '\tcomment "storebox: shop LAN to the active uplink; regenerated on change"',
                 *self._sets(),
                 "\tcounter lte_blocked { }",
                 "\tcounter standby_blocked { }",
                 "\tcounter inbound_dropped { }",
                 *(["\tcounter modem_blocked { }"] if "lte" in self.uplinks else []),
                 *(self._firewall_counters() if self.firewall else []),
                 *self._prerouting(lan),
                 *self._modem_guard(lan),
                 *self._forward(lan, wans, outs, sticky=active is not None),
                 *self._postrouting(lan, outs)]
        if self.firewall:
            lines += self._input_chain(lan, wans)
        lines += ["}", ""]
        return "\n".join(lines)

    def _sets(self) -> list[str]:
        """The address sets: the LTE allowlist, the modem's management addresses."""
        sets: list[tuple[str, list[IPv4Network] | list[IPv6Network]]] = []
        if self.lte_allowlist is not None:
            sets += [("lte_allow4", self.lte_allowlist[0]), ("lte_allow6", self.lte_allowlist[1])]
        if "lte" in self.uplinks:
            v4, v6 = parse_networks(
                [*(str(n) for n in (*self.modem_management[0], *self.modem_management[1])),
                 *self.lte_gateways], "modem_management")
            sets += [("modem_mgmt4", v4), ("modem_mgmt6", v6)]
        lines = []
        for name, nets in sets:
            kind = "ipv4_addr" if name.endswith("4") else "ipv6_addr"
            elements = f" elements = {{ {', '.join(str(n) for n in nets)} }}" if nets else ""
            lines.append(f"\tset {name} {{ type {kind}; flags interval;{elements} }}")
        return lines

    def _modem_guard(self, lan: str) -> list[str]:
        """The modem's own management: the box may talk to it, the LAN may not. A base
        chain of its own, before the forward chain (a drop there is final), so that
        `guard` can put it in place at start without replacing the LAN's forwarding."""
        if "lte" not in self.uplinks:
            return []
        lte = self.uplinks["lte"]
        return ["\tchain modem_guard {",
                "\t\ttype filter hook forward priority filter - 1; policy accept;",
                f'\t\tiifname {lan} oifname "{lte}" ip daddr @modem_mgmt4 '
                'counter name "modem_blocked" drop',
                f'\t\tiifname {lan} oifname "{lte}" ip6 daddr @modem_mgmt6 '
                'counter name "modem_blocked" drop',
                "\t}"]

    def _prerouting(self, lan: str) -> list[str]:
        keep = ~FLOW_MARK_MASK & 0xFFFFFFFF
        lines = ["\tchain prerouting {",
                 "\t\ttype filter hook prerouting priority mangle; policy accept;"]
        for uplink in self.uplinks:
            mark = FLOW_MARKS[uplink]
            lines.append(f"\t\tiifname {lan} ct mark and {FLOW_MARK_MASK:#x} == {mark:#x} "
                         f"meta mark set meta mark and {keep:#010x} or {mark:#x}")
        return [*lines, "\t}"]

    def _forward(self, lan: str, wans: str, outs: list[UplinkName], *,
                 sticky: bool) -> list[str]:
        lines = [
            "\tchain forward {",
            "\t\ttype filter hook forward priority filter; policy accept;",
            f"\t\tiifname {wans} oifname {lan} ct state established,related accept",
            f'\t\tiifname {wans} oifname {lan} counter name "inbound_dropped" drop',
        ]
        for uplink in outs:
            out = self.uplinks[uplink]
            if self.lte_allowlist is not None and uplink == "lte":
                lines += [
                    f'\t\tiifname {lan} oifname "{out}" ip daddr @lte_allow4 accept',
                    f'\t\tiifname {lan} oifname "{out}" ip6 daddr @lte_allow6 accept',
                    f'\t\tiifname {lan} oifname "{out}" counter name "lte_blocked" '
                    "reject with icmpx admin-prohibited",
                ]
            else:
                lines.append(f'\t\tiifname {lan} oifname "{out}" accept')
        if sticky:
            # sticky flows: those masqueraded through an uplink left may keep it
            for uplink, out in self.uplinks.items():
                if uplink in outs:
                    continue
                pinned = (f'\t\tiifname {lan} oifname "{out}" '
                          f"ct mark and {FLOW_MARK_MASK:#x} == {FLOW_MARKS[uplink]:#x}")
                if self.lte_allowlist is not None and uplink == "lte":
                    lines += [f"{pinned} ip daddr @lte_allow4 accept",
                              f"{pinned} ip6 daddr @lte_allow6 accept"]
                else:
                    lines.append(f"{pinned} accept")
        return [*lines,
                f'\t\tiifname {lan} oifname {wans} counter name "standby_blocked" '
                "reject with icmpx admin-prohibited",
                "\t}"]

    def _postrouting(self, lan: str, outs: list[UplinkName]) -> list[str]:
        keep = ~FLOW_MARK_MASK & 0xFFFFFFFF
        lines = ["\tchain postrouting {",
                 "\t\ttype nat hook postrouting priority srcnat; policy accept;"]
        for uplink in outs:
            lines.append(f'\t\tiifname {lan} oifname "{self.uplinks[uplink]}" '
                         f"ct mark set ct mark and {keep:#010x} or {FLOW_MARKS[uplink]:#x} "
                         "masquerade")
        return [*lines, "\t}"]

    def _firewall_counters(self) -> list[str]:
        return ["\tcounter uplink_dropped { }", "\tcounter api_refused { }",
                *(["\tcounter lan_services_refused { }"] if self.lan_services else [])]

    def _input_chain(self, lan: str, wans: str) -> list[str]:
        """The box's own firewall (docs/openapi.json): see "The box itself" in the module doc."""
        lines = [
            "\tchain input {",
            "\t\ttype filter hook input priority filter; policy accept;",
            '\t\tiif "lo" accept',
            "\t\tct state established,related accept",
        ]
        if self.lan_services:
            lines += [f"\t\tiifname {lan} udp dport {{ 53, 67 }} accept",
                      f"\t\tiifname {lan} tcp dport 53 accept"]
        lines += [
            f"\t\tiifname {lan} accept",
            # DHCP client replies (a renewal's unicast answer, or one to a broadcast)
            f"\t\tiifname {wans} udp sport 67 udp dport 68 accept",
            f"\t\tiifname {wans} ip6 saddr fe80::/10 udp sport 547 udp dport 546 accept",
            # IPv6 needs neighbour discovery and router advertisements (link-local only)
            f"\t\tiifname {wans} ip6 hoplimit 255 icmpv6 type "
            "{ nd-neighbor-solicit, nd-neighbor-advert, nd-router-advert } accept",
            # path MTU discovery may not be able to name its connection after a flush
            f"\t\tiifname {wans} icmpv6 type packet-too-big accept",
            f"\t\tiifname {wans} icmp type destination-unreachable icmp code frag-needed "
            "accept",
        ]
        if self.api_ports:
            ports = "{ " + ", ".join(str(p) for p in self.api_ports) + " }"
            lines.append(f'\t\ttcp dport {ports} counter name "api_refused" drop')
        if self.lan_services:
            # the LAN's DNS and DHCP server, from anywhere but the LAN
            lines += ['\t\tudp dport { 53, 67 } counter name "lan_services_refused" drop',
                      '\t\ttcp dport 53 counter name "lan_services_refused" drop']
        lines += [f'\t\tiifname {wans} counter name "uplink_dropped" drop', "\t}"]
        return lines

    async def apply(self, active: UplinkName | None, also: Sequence[UplinkName] = ()) -> None:
        """Make `active` the LAN's uplink, atomically. None: the LAN is cut off.
        `also`: see `render`."""
        async with self._lock:
            script = self.render(active, also)
            await self._nft(["-f", "-"], script, "apply")
            self.active, self.also, self.applied = active, tuple(also), True

    async def guard(self) -> None:
        """The box's own firewall from the daemon's start, before any uplink decision (and
        so before the API listens): the engine's first `apply` may be long in coming (no
        uplink works, none is ever chosen).

        No table yet (the box booted): the whole table as in offline mode -- the input
        chain, the LAN reaching no uplink, nothing from the uplinks reaching the LAN,
        which is what the engine applies anyway until it has chosen an uplink. A table
        left by the daemon's previous run (it stays when the daemon stops): only its
        input chain and the modem's guard are replaced, with this configuration's, so the
        LAN keeps the uplink it had through a restart until the engine's first decision
        replaces the rest, and never reaches the modem's management meanwhile."""
        if self.modem_gateway:
            await self._lookup_gateways()
        if not await self.present():
            await self.apply(None)
        elif self.firewall or "lte" in self.uplinks:
            async with self._lock:
                await self._nft(["-f", "-"], self.render_guard(), "guard")

    def render_guard(self) -> str:
        """A transaction that replaces the input chain and the modem's guard (with its
        address sets) of an existing table, and only them."""
        lines: list[str] = []
        if self.firewall:
            lines += [f"table {FAMILY} {TABLE} {{", *self._firewall_counters(),
                      "\tchain input { type filter hook input priority filter; "
                      "policy accept; }",
                      "}", f"flush chain {FAMILY} {TABLE} input", f"table {FAMILY} {TABLE} {{",
                      *self._input_chain(_set(self.lan), _set(self.uplinks.values())), "}"]
        if "lte" in self.uplinks:
            lines += self._render_modem_guard()
        return "\n".join([*lines, ""])

    def _render_modem_guard(self) -> list[str]:
        sets = [line for line in self._sets() if "modem_mgmt" in line]
        names = ("modem_mgmt4", "modem_mgmt6")
        return [f"table {FAMILY} {TABLE} {{",
                "\tcounter modem_blocked { }",
                "\tset modem_mgmt4 { type ipv4_addr; flags interval; }",
                "\tset modem_mgmt6 { type ipv6_addr; flags interval; }",
                "\tchain modem_guard { type filter hook forward priority filter - 1; "
                "policy accept; }",
                "}",
                *(f"flush set {FAMILY} {TABLE} {name}" for name in names),
                f"flush chain {FAMILY} {TABLE} modem_guard",
                f"table {FAMILY} {TABLE} {{", *sets, *self._modem_guard(_set(self.lan)), "}"]

    async def refresh_modem_gateway(self) -> bool:
        """Look up the LTE interface's gateway again; when it changed (a modem reconnect,
        a new lease) and the table was applied, apply it again. True when it changed."""
        before = self.lte_gateways
        await self._lookup_gateways()
        if self.lte_gateways == before:
            return False
        log.info("LAN forwarding: the LTE gateway is now %s",
                 ", ".join(self.lte_gateways) or "none")
        if self.applied:
            async with self._lock:
                script = self.render(self.active, self.also)
                await self._nft(["-f", "-"], script, "apply")
        return True

    async def watch_modem_gateway(self, interval_s: float = 10.0) -> None:
        """`refresh_modem_gateway` every `interval_s`, for ever (cancel to stop); failures
        are logged and retried at the next turn. One netlink dump a turn (no `ip` spawned:
        issue #13's idle CPU); the socket is closed when the watch ends."""
        if not self.modem_gateway or "lte" not in self.uplinks:
            return
        try:
            while True:
                await asyncio.sleep(interval_s)
                try:
                    await self.refresh_modem_gateway()
                except (NftError, OSError) as exc:
                    log.error("LAN forwarding: the LTE gateway's block: %s", exc)
        finally:
            await self.close()

    async def close(self) -> None:
        """Close the netlink socket the gateway lookups keep (opened again when needed)."""
        if self._netlink is not None:
            netlink, self._netlink = self._netlink, None
            await netlink.close()

    async def _lookup_gateways(self) -> None:
        """`lte_gateways`: the private gateways of the LTE interface's default routes
        (main table, both families, read over netlink); () when there is none, unchanged
        when netlink cannot tell."""
        interface = self.uplinks.get("lte")
        if interface is None:
            return
        # imported here: pyroute2 only for a box that forwards a LAN (as route control)
        from pyroute2.netlink.exceptions import NetlinkError

        from failover.routes_netlink import Netlink

        if self._netlink is None:
            self._netlink = Netlink(self.netns)
        try:
            gateways = await self._netlink.default_gateways(interface)
        except (NetlinkError, OSError) as exc:
            log.warning("LAN forwarding: the LTE gateway is unknown: %s", exc)
            await self.close()  # a fresh socket next time
            return
        found = private_gateways({"gateway": g} for g in gateways)
        self.lte_gateways = tuple(dict.fromkeys(found))

    async def set_lte_allowlist(self, entries: Iterable[str] | None) -> None:
        """Change (None: drop) the LTE allowlist; re-applied at once if applied before."""
        self.lte_allowlist = parse_networks(entries) if entries is not None else None
        if self.applied:
            await self.apply(self.active, self.also)

    async def remove(self) -> bool:
        """Delete table `inet storebox` (nothing else). False when it was not there."""
        present = await self.present()
        if present:
            await self._nft(["-f", "-"], f"delete table {FAMILY} {TABLE}\n", "remove")
        self.applied, self.active = False, None
        return present

    async def present(self) -> bool:
        code, _, _ = await self._run(["list", "table", FAMILY, TABLE], None)
        return code == 0

    async def describe(self) -> dict[str, Any]:
        """For status: active uplink, allowlist, and the table's counters."""
        counters: dict[str, int] = {}
        code, out, _ = await self._run(["-j", "list", "counters", "table", FAMILY, TABLE], None)
        if code == 0:
            try:
                for item in json.loads(out).get("nftables", []):
                    counter = item.get("counter")
                    if counter:
                        counters[counter["name"]] = int(counter["packets"])
            except (ValueError, KeyError, TypeError):
                counters = {}
        allow = None
        if self.lte_allowlist is not None:
            allow = [str(n) for n in (*self.lte_allowlist[0], *self.lte_allowlist[1])]
        return {"table": f"{FAMILY} {TABLE}", "present": code == 0, "active": self.active,
                "lan_interfaces": list(self.lan), "uplinks": dict(self.uplinks),
                "lte_allowlist": allow, "counters": counters}

    async def _nft(self, args: list[str], stdin: str | None, operation: str) -> None:
        code, _, err = await self._run(args, stdin)
        if code != 0:
            raise NftError(operation, code, err)

    async def _run(self, args: list[str], stdin: str | None) -> tuple[int | None, str, str]:
        """`nft ARGS` in the namespace: (exit code, stdout, stderr)."""
        command = [self.nft, *args]
        if self.netns is not None:
            path = self.netns if "/" in self.netns else f"/run/netns/{self.netns}"
            command = ["nsenter", f"--net={path}", "--", *command]
        try:
            proc = await asyncio.create_subprocess_exec(
                *command,
                stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        except FileNotFoundError as exc:
            raise NftError(" ".join(args), None,
                           f"{exc.filename!r} not found (Debian package nftables)") from exc
        try:
            async with asyncio.timeout(self.timeout):
                out, err = await proc.communicate(stdin.encode() if stdin is not None else None)
        except TimeoutError as exc:
            proc.kill()
            await proc.wait()
            raise NftError(" ".join(args), None, f"no answer within {self.timeout} s") from exc
        return proc.returncode, out.decode(errors="replace"), err.decode(errors="replace")
