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
        chain prerouting {
            type filter hook prerouting priority mangle; policy accept;
            iifname { "lan0" } ct mark and 0xff00 == 0x100 \
                meta mark set meta mark and 0xffff00ff or 0x100
            iifname { "lan0" } ct mark and 0xff00 == 0x200 \
                meta mark set meta mark and 0xffff00ff or 0x200
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

The box itself (CONTRACTS 3a)
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
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable, Mapping, Sequence
from ipaddress import IPv4Network, IPv6Network, collapse_addresses, ip_network
from typing import Any

from failover.errors import NftConfigError, NftError
from failover.routes import UPLINK_NAMES, Uplink, UplinkName, interface_name_problem
from failover.sticky import FLOW_MARK_MASK, FLOW_MARKS

TABLE = "storebox"
FAMILY = "inet"


def _interface(field: str, value: object) -> str:
    problem = interface_name_problem(value)
    if problem is not None:
        raise NftConfigError(field, value, problem)
    assert isinstance(value, str)
    return value


def parse_allowlist(entries: Iterable[str]) -> tuple[list[IPv4Network], list[IPv6Network]]:
    """IP addresses / CIDRs, validated, merged (overlaps collapse), split by family."""
    if isinstance(entries, str | bytes):
        raise NftConfigError("lte_allowlist", entries, "must be a list of addresses/CIDRs")
    v4: list[IPv4Network] = []
    v6: list[IPv6Network] = []
    for entry in entries:
        if not isinstance(entry, str):
            raise NftConfigError("lte_allowlist", entry, "must be a string")
        try:
            network = ip_network(entry.strip(), strict=True)
        except ValueError as exc:
            raise NftConfigError("lte_allowlist", entry,
                                 f"not an IP address or CIDR network ({exc})") from None
        if network.prefixlen == 0:
            raise NftConfigError("lte_allowlist", entry,
                                 "allows everything; leave the allowlist unset instead")
        if isinstance(network, IPv4Network):
            v4.append(network)
        else:
            v6.append(network)
    return list(collapse_addresses(v4)), list(collapse_addresses(v6))


def _port(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 65536:
        raise NftConfigError("api_ports", value, "must be a TCP port from 1 to 65535")
    return value


def _set(names: Iterable[str]) -> str:
    return "{ " + ", ".join(f'"{n}"' for n in names) + " }"


class LanForwarding:
    """LAN → active uplink forwarding and masquerade in table `inet storebox`."""

    def __init__(self, *, lan_interfaces: Sequence[str],
                 uplinks: Iterable[Uplink] | Mapping[UplinkName, str],
                 lte_allowlist: Iterable[str] | None = None, netns: str | None = None,
                 nft: str = "nft", timeout: float = 10.0,
                 api_ports: Iterable[int] = (), firewall: bool = True) -> None:
        if isinstance(lan_interfaces, str):
            raise NftConfigError("lan_interfaces", lan_interfaces, "must be a list of names")
        self.lan = [_interface("lan_interfaces", name) for name in lan_interfaces]
        if not self.lan:
            raise NftConfigError("lan_interfaces", list(lan_interfaces), "at least one needed")
        pairs = (list(uplinks.items()) if isinstance(uplinks, Mapping)
                 else [(u.name, u.interface) for u in uplinks])
        self.uplinks: dict[UplinkName, str] = {}
        for name, interface in pairs:
            if name not in UPLINK_NAMES:
                raise NftConfigError("uplinks", name, f"must be one of {', '.join(UPLINK_NAMES)}")
            self.uplinks[name] = _interface(f"{name}.interface", interface)
        if not self.uplinks:
            raise NftConfigError("uplinks", pairs, "at least one uplink needed")
        clash = set(self.lan) & set(self.uplinks.values())
        if clash or len(set(self.uplinks.values())) != len(self.uplinks):
            raise NftConfigError("lan_interfaces", sorted(clash) or self.uplinks,
                                 "an interface cannot be both LAN and uplink, or two uplinks")
        self.lte_allowlist: tuple[list[IPv4Network], list[IPv6Network]] | None = None
        if lte_allowlist is not None:
            self.lte_allowlist = parse_allowlist(lte_allowlist)
        self.api_ports = sorted({_port(p) for p in api_ports})
        self.firewall = firewall
        self.netns = netns
        self.nft = nft
        self.timeout = timeout
        self.active: UplinkName | None = None
        self.applied = False

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
                 '\tcomment "storebox: shop LAN to the active uplink; regenerated on change"']
        lines += self._allowlist_sets()
        lines += self._counters()
        lines += self._prerouting_chain(lan)
        lines += self._forward_chain(lan, wans, outs, sticky=active is not None)
        lines += self._postrouting_chain(lan, outs)
        if self.firewall:
            lines += self._input_chain(lan, wans)
        lines += ["}", ""]
        return "\n".join(lines)

    def _allowlist_sets(self) -> list[str]:
        if self.lte_allowlist is None:
            return []
        v4, v6 = self.lte_allowlist
        lines = []
        for name, kind, nets in (("lte_allow4", "ipv4_addr", v4),
                                 ("lte_allow6", "ipv6_addr", v6)):
            elements = (f" elements = {{ {', '.join(str(n) for n in nets)} }}"
                        if nets else "")
            lines.append(f"\tset {name} {{ type {kind}; flags interval;{elements} }}")
        return lines

    def _counters(self) -> list[str]:
        return [
            "\tcounter lte_blocked { }",
            "\tcounter standby_blocked { }",
            "\tcounter inbound_dropped { }",
            *(["\tcounter uplink_dropped { }", "\tcounter api_refused { }"]
              if self.firewall else []),
        ]

    def _prerouting_chain(self, lan: str) -> list[str]:
        keep = ~FLOW_MARK_MASK & 0xFFFFFFFF
        lines = [
            "\tchain prerouting {",
            "\t\ttype filter hook prerouting priority mangle; policy accept;",
        ]
        for uplink in self.uplinks:
            mark = FLOW_MARKS[uplink]
            lines.append(f"\t\tiifname {lan} ct mark and {FLOW_MARK_MASK:#x} == {mark:#x} "
                         f"meta mark set meta mark and {keep:#010x} or {mark:#x}")
        lines.append("\t}")
        return lines

    def _forward_chain(self, lan: str, wans: str, outs: list[UplinkName], *,
                       sticky: bool) -> list[str]:
        lines = [
            "\tchain forward {",
            "\t\ttype filter hook forward priority filter; policy accept;",
            f"\t\tiifname {wans} oifname {lan} ct state established,related accept",
            f'\t\tiifname {wans} oifname {lan} counter name "inbound_dropped" drop',
        ]
        for uplink in outs:
            lines += self._forward_out(lan, uplink)
        if sticky:
            lines += self._forward_pinned(lan, outs)
        lines += [
            f'\t\tiifname {lan} oifname {wans} counter name "standby_blocked" '
            "reject with icmpx admin-prohibited",
            "\t}",
        ]
        return lines

    def _forward_out(self, lan: str, uplink: UplinkName) -> list[str]:
        out = self.uplinks[uplink]
        if self.lte_allowlist is not None and uplink == "lte":
            return [
                f'\t\tiifname {lan} oifname "{out}" ip daddr @lte_allow4 accept',
                f'\t\tiifname {lan} oifname "{out}" ip6 daddr @lte_allow6 accept',
                f'\t\tiifname {lan} oifname "{out}" counter name "lte_blocked" '
                "reject with icmpx admin-prohibited",
            ]
        return [f'\t\tiifname {lan} oifname "{out}" accept']

    def _forward_pinned(self, lan: str, outs: list[UplinkName]) -> list[str]:
        # sticky flows: those masqueraded through an uplink left may keep it
        lines = []
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
        return lines

    def _postrouting_chain(self, lan: str, outs: list[UplinkName]) -> list[str]:
        keep = ~FLOW_MARK_MASK & 0xFFFFFFFF
        lines = [
            "\tchain postrouting {",
            "\t\ttype nat hook postrouting priority srcnat; policy accept;",
        ]
        for uplink in outs:
            lines.append(f'\t\tiifname {lan} oifname "{self.uplinks[uplink]}" '
                         f"ct mark set ct mark and {keep:#010x} or {FLOW_MARKS[uplink]:#x} "
                         "masquerade")
        lines.append("\t}")
        return lines

    def _input_chain(self, lan: str, wans: str) -> list[str]:
        """The box's own firewall (CONTRACTS 3a): see "The box itself" in the module doc."""
        lines = [
            "\tchain input {",
            "\t\ttype filter hook input priority filter; policy accept;",
            '\t\tiif "lo" accept',
            "\t\tct state established,related accept",
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
        lines += [f'\t\tiifname {wans} counter name "uplink_dropped" drop', "\t}"]
        return lines

    async def apply(self, active: UplinkName | None, also: Sequence[UplinkName] = ()) -> None:
        """Make `active` the LAN's uplink, atomically. None: the LAN is cut off.
        `also`: see `render`."""
        script = self.render(active, also)
        await self._nft(["-f", "-"], script, "apply")
        self.active, self.applied = active, True

    async def set_lte_allowlist(self, entries: Iterable[str] | None) -> None:
        """Change (None: drop) the LTE allowlist; re-applied at once if applied before."""
        self.lte_allowlist = parse_allowlist(entries) if entries is not None else None
        if self.applied:
            await self.apply(self.active)

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
