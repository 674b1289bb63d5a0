"""Packet domain parsers (3GPP TS 27.007): `+CGDCONT` (10.1.1), `+CGACT` (10.1.10),
`+CGPADDR` (10.1.14), `+CGCONTRDP` (10.1.23: the context's gateway and DNS servers) and
the `+CGEV` events (10.1.19) that tell the data call went down.
Pure, like every module of `hw.modem.parsers`.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from hw.modem.errors import ParseError
from hw.modem.parsers.tokens import (
    Field,
    payload,
    response_lines,
    single_line,
    split_fields,
    to_int,
)

# --- packet domain: +CGDCONT (10.1.1), +CGACT (10.1.10), +CGPADDR (10.1.14) --------------


@dataclass(frozen=True, slots=True)
class PdpContext:
    """One `+CGDCONT?` line. `apn` and `address` are None when empty (or all zeros)."""

    cid: int
    pdp_type: str
    apn: str | None
    address: str | None


@dataclass(frozen=True, slots=True)
class PdpContextState:
    """One `+CGACT?` line."""

    cid: int
    active: bool


@dataclass(frozen=True, slots=True)
class PdpAddress:
    """One `+CGPADDR` line: the context's IPv4 and/or IPv6 address (None if not assigned)."""

    cid: int
    ipv4: ipaddress.IPv4Address | None
    ipv6: ipaddress.IPv6Address | None


def parse_pdp_address(value: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """A PDP address as TS 27.007 writes it: dotted IPv4, IPv6 as 16 dot-separated decimal
    octets (the default) or colon notation (after `+CGPIAF`). Empty or unspecified
    (all-zero) addresses are None; anything else unparsable is a `ValueError`."""
    text = value.strip().strip('"').strip()
    if not text:
        return None
    address: ipaddress.IPv4Address | ipaddress.IPv6Address
    if ":" in text:
        address = ipaddress.IPv6Address(text)
    else:
        parts = text.split(".")
        if len(parts) == 4:
            address = ipaddress.IPv4Address(text)
        elif len(parts) == 16 and all(p.isdigit() and int(p) <= 255 for p in parts):
            address = ipaddress.IPv6Address(bytes(int(p) for p in parts))
        else:
            raise ValueError(f"not an IPv4 or IPv6 address: {value!r}")
    return None if address.is_unspecified else address


def _prefixed_lines(text: str, prefix: str) -> list[tuple[str, list[Field]]]:
    return [(line, split_fields(payload(line, prefix), prefix, line))
            for line in response_lines(text)]


#: `<PDP_type>` values of TS 27.007 clause 10.1.1.
PDP_TYPES: Final = frozenset({"IP", "IPV6", "IPV4V6", "PPP", "X.25", "OSPIH", "NON-IP",
                              "ETHERNET", "UNSTRUCTURED"})


def parse_cgdcont(text: str) -> tuple[PdpContext, ...]:
    """`+CGDCONT: <cid>,<PDP_type>,<APN>,<PDP_addr>,...` lines (empty response: no contexts)."""
    contexts: list[PdpContext] = []
    for line, fields in _prefixed_lines(text, "+CGDCONT"):
        if len(fields) < 2:
            raise ParseError("+CGDCONT", line, "expected <cid>,<PDP_type>,...")
        cid = to_int(fields[0].text, "+CGDCONT", line, "<cid>")
        if fields[1].text.upper() not in PDP_TYPES:
            raise ParseError("+CGDCONT", line, f"unknown <PDP_type> {fields[1].text!r}")
        address = fields[3].text if len(fields) > 3 else ""
        if address:
            try:
                if parse_pdp_address(address) is None:
                    address = ""
            except ValueError:
                pass  # keep what the modem said; +CGDCONT addresses are informational
        contexts.append(PdpContext(
            cid=cid,
            pdp_type=fields[1].text.upper(),
            apn=(fields[2].text or None) if len(fields) > 2 else None,
            address=address or None,
        ))
    return tuple(contexts)


def parse_cgact(text: str) -> tuple[PdpContextState, ...]:
    """`+CGACT: <cid>,<state>` lines (empty response: no contexts)."""
    states: list[PdpContextState] = []
    for line, fields in _prefixed_lines(text, "+CGACT"):
        if len(fields) != 2:
            raise ParseError("+CGACT", line, "expected <cid>,<state>")
        state = to_int(fields[1].text, "+CGACT", line, "<state>")
        if state not in (0, 1):
            raise ParseError("+CGACT", line, f"<state> {state} is not 0 or 1")
        states.append(PdpContextState(cid=to_int(fields[0].text, "+CGACT", line, "<cid>"),
                                      active=state == 1))
    return tuple(states)


def parse_cgpaddr(text: str) -> tuple[PdpAddress, ...]:
    """`+CGPADDR: <cid>[,<PDP_addr_1>[,<PDP_addr_2>]]` lines; an IPV4V6 context lists both."""
    result: list[PdpAddress] = []
    for line, fields in _prefixed_lines(text, "+CGPADDR"):
        cid = to_int(fields[0].text, "+CGPADDR", line, "<cid>")
        if len(fields) > 3:
            raise ParseError("+CGPADDR", line, "more than two addresses")
        v4: ipaddress.IPv4Address | None = None
        v6: ipaddress.IPv6Address | None = None
        for field in fields[1:]:
            try:
                address = parse_pdp_address(field.text)
            except ValueError as exc:
                raise ParseError("+CGPADDR", line, str(exc)) from None
            if isinstance(address, ipaddress.IPv4Address):
                if v4 is not None:
                    raise ParseError("+CGPADDR", line, "two IPv4 addresses")
                v4 = address
            elif isinstance(address, ipaddress.IPv6Address):
                if v6 is not None:
                    raise ParseError("+CGPADDR", line, "two IPv6 addresses")
                v6 = address
        result.append(PdpAddress(cid=cid, ipv4=v4, ipv6=v6))
    return tuple(result)


# --- dynamic parameters: +CGCONTRDP (clause 10.1.23) ----------------------------------


@dataclass(frozen=True, slots=True)
class PdpDynamicParams:
    """One `+CGCONTRDP` line: what the network gave one bearer of context `cid`. Addresses
    are normalised (`str(ipaddress.ip_address(...))`), None when the modem left them out
    or empty; an IPV4V6 context has one line per address family."""

    cid: int
    bearer_id: int
    apn: str | None
    local_address: str | None
    subnet: str | None
    gateway: str | None
    dns_primary: str | None
    dns_secondary: str | None

    @property
    def dns(self) -> tuple[str, ...]:
        """The resolvers given, primary first; unspecified ones ("0.0.0.0", "::") left out."""
        return tuple(a for a in (self.dns_primary, self.dns_secondary)
                     if a is not None and not ipaddress.ip_address(a).is_unspecified)


def _dotted_v6(text: str) -> str:
    """TS 27.007's default IPv6 notation: 16 dot-separated decimal octets."""
    octets = text.split(".")
    if len(octets) != 16 or not all(o.isdigit() and int(o) <= 255 for o in octets):
        raise ValueError(f"not 16 decimal octets: {text!r}")
    return str(ipaddress.IPv6Address(bytes(int(o) for o in octets)))


def _address(text: str) -> str | None:
    """A gateway or DNS field: None when empty, dotted-octet IPv6, else any IP address."""
    if not text:
        return None
    if text.count(".") == 15:
        return _dotted_v6(text)
    return str(ipaddress.ip_address(text))


def _local_and_subnet(text: str) -> tuple[str, str | None, bool]:
    """`<local_addr and subnet_mask>` split by its dots, as ModemManager's
    `split_local_address_and_subnet`: 3 an IPv4 address alone (the pre-v9.4.0 layout, the
    mask in a field of its own), 7 IPv4 address and mask, 15 an IPv6 address, 31 IPv6
    address and mask, none an address in colon notation (after `+CGPIAF`). Returns
    (address, subnet, is IPv6)."""
    dots = text.count(".")
    octets = text.split(".")
    if dots == 0 and ":" in text:
        address, _, prefix = text.partition("/")  # +CGPIAF's <IPv6_subnetnotation>
        return str(ipaddress.IPv6Address(address)), prefix or None, True
    if dots == 3:
        return str(ipaddress.IPv4Address(text)), None, False
    if dots == 7:
        return (str(ipaddress.IPv4Address(".".join(octets[:4]))),
                str(ipaddress.IPv4Address(".".join(octets[4:]))), False)
    if dots == 15:
        return _dotted_v6(text), None, True
    if dots == 31:
        return _dotted_v6(".".join(octets[:16])), _dotted_v6(".".join(octets[16:])), True
    raise ValueError(f"not an address (and mask): {text!r}")


def _cgcontrdp_line(line: str, fields: list[Field]) -> PdpDynamicParams:
    if len(fields) < 3:
        raise ParseError("+CGCONTRDP", line, "expected <cid>,<bearer_id>,<apn>,...")
    texts = [f.text for f in fields]
    address = subnet = None
    shift = 0
    try:
        if len(texts) > 3 and texts[3]:
            address, subnet, v6 = _local_and_subnet(texts[3])
            if subnet is None and not v6:  # before TS 27.007 v9.4.0: the mask on its own
                subnet = _address(texts[4]) if len(texts) > 4 else None
                shift = 1
        gateway, dns1, dns2 = (_address(texts[i + shift]) if len(texts) > i + shift
                               else None for i in (4, 5, 6))
    except ValueError as exc:
        raise ParseError("+CGCONTRDP", line, str(exc)) from None
    return PdpDynamicParams(
        cid=to_int(texts[0], "+CGCONTRDP", line, "<cid>"),
        bearer_id=to_int(texts[1], "+CGCONTRDP", line, "<bearer_id>"),
        apn=texts[2] or None, local_address=address, subnet=subnet, gateway=gateway,
        dns_primary=dns1, dns_secondary=dns2)


def parse_cgcontrdp(text: str) -> tuple[PdpDynamicParams, ...]:
    """`+CGCONTRDP: <cid>,<bearer_id>,<apn>[,<local_addr and subnet_mask>[,<gw_addr>
    [,<DNS_prim_addr>[,<DNS_sec_addr>[,...]]]]]` lines, one per bearer (empty response:
    none). As ModemManager's `mm_3gpp_parse_cgcontrdp_response`: only <cid>, <bearer_id>
    and <apn> are mandatory, the APN may be empty, fields are quoted or not, IPv4 address
    and mask come as 8 dotted octets ("a.b.c.d.m.m.m.m") or, before TS 27.007 v9.4.0, as
    two fields (detected by the first holding a bare IPv4 address), IPv6 as 16 dotted
    octets or in colon notation; the fields after the secondary DNS are not read."""
    return tuple(_cgcontrdp_line(line, fields)
                 for line, fields in _prefixed_lines(text, "+CGCONTRDP"))


def context_dns(params: tuple[PdpDynamicParams, ...], cid: int) -> tuple[str, ...]:
    """The resolvers of context `cid`, from every bearer line of it (an IPV4V6 context's
    IPv4 line first, as the modem lists them), each once."""
    found = [a for p in params if p.cid == cid for a in p.dns]
    return tuple(dict.fromkeys(found))


# --- packet domain events: +CGEV (clause 10.1.19) -------------------------------------


class PacketEvent(StrEnum):
    """What a `+CGEV:` URC reports (the kinds that matter for the data call)."""

    NW_DEACT = "nw_deact"        # the network deactivated a context (PDN, PDP, secondary)
    ME_DEACT = "me_deact"        # the modem deactivated it
    NW_DETACH = "nw_detach"      # the network detached the modem
    ME_DETACH = "me_detach"
    NW_ACT = "nw_act"
    ME_ACT = "me_act"
    REJECT = "reject"
    OTHER = "other"              # REACT, MODIFY, CLASS ...


@dataclass(frozen=True, slots=True)
class PacketDomainEvent:
    """A `+CGEV:` event; `cid` None when the event concerns no (or every) context."""

    kind: PacketEvent
    cid: int | None


_CGEV: Final = re.compile(r"\s*(?:\+CGEV:\s*)?(NW|ME)?\s*(PDN\s+)?(DEACT|ACT|DETACH|REJECT|"
                          r"REACT|MODIFY|CLASS)\b\s*(.*)$", re.IGNORECASE)


def parse_cgev(text: str) -> PacketDomainEvent:
    """`+CGEV:` in its TS 27.007 forms (ModemManager's `mm_3gpp_parse_cgev_indication_*`):
    `NW PDN DEACT <cid>`, `NW DEACT <PDP_type>,<PDP_addr>[,<cid>]`, `NW DEACT <p_cid>,
    <cid>,<event_type>` (secondary: the second number is the context), `NW DETACH`, and
    the `ME` and activation counterparts."""
    line = single_line(text, "+CGEV")
    match = _CGEV.match(line)
    if match is None:
        raise ParseError("+CGEV", line, "not a packet domain event")
    who = (match.group(1) or "").upper()
    pdn = match.group(2) is not None
    verb = match.group(3).upper()
    args = [a.strip() for a in match.group(4).split(",")] if match.group(4).strip() else []
    kinds = {("NW", "DEACT"): PacketEvent.NW_DEACT, ("ME", "DEACT"): PacketEvent.ME_DEACT,
             ("NW", "DETACH"): PacketEvent.NW_DETACH, ("ME", "DETACH"): PacketEvent.ME_DETACH,
             ("NW", "ACT"): PacketEvent.NW_ACT, ("ME", "ACT"): PacketEvent.ME_ACT,
             ("", "REJECT"): PacketEvent.REJECT}
    kind = kinds.get((who, verb), PacketEvent.OTHER)
    cid: int | None = None
    if args and args[0].isdigit():
        # "PDN DEACT <cid>[,<reason>...]" or secondary "<p_cid>,<cid>,<event_type>"
        cid = int(args[0]) if pdn or len(args) < 3 else \
            (int(args[1]) if args[1].isdigit() else None)
    elif len(args) >= 3 and args[2].isdigit():  # "<PDP_type>,<PDP_addr>,<cid>"
        cid = int(args[2])
    return PacketDomainEvent(kind=kind, cid=cid)
