"""The generic 3GPP TS 27.007 profile: the base every vendor profile refines.

A profile answers "which commands, in which order, parsed how" for the operations where
modems differ (ModemManager's plugin idea): signal, ICCID, network time, data bring-up,
SIM slot switching, extra init commands. The `Modem` never branches on a vendor; it calls
its profile. Each operation is a small async method over an `AtPort` (anything with
`AtChannel.command()`'s signature) plus pure helpers (command builders, reading
converters) that tests exercise without a modem.

Errors: `CommandError`/`CommandTimeout`/`ModemRebooted`/`PortClosed` from the port pass
through, except where a method documents a fallback; malformed answers are `ParseError`;
an operation the modem cannot do is `NotSupported`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import ClassVar, Protocol

from hw.modem.errors import CommandError, NotSupported, ParseError
from hw.modem.exchange import Response
from hw.modem.parsers.clock import NetworkTime, parse_cclk
from hw.modem.parsers.identity import (
    ModemIdentity,
    parse_ati,
    parse_cgmi,
    parse_cgmm,
    parse_cgmr,
    parse_cgsn,
    parse_iccid,
)
from hw.modem.parsers.pdp import (
    PdpAddress,
    context_dns,
    parse_cgact,
    parse_cgcontrdp,
    parse_cgpaddr,
)
from hw.modem.parsers.registration import AccessTechnology
from hw.modem.parsers.signal import ExtendedSignalQuality, SignalQuality, parse_cesq, parse_csq
from hw.modem.status import DataStatus, SignalReading

__all__ = [
    "AtPort",
    "GenericProfile",
    "InitCommand",
    "Timeouts",
    "check_apn",
    "info_text",
    "pdp_context_command",
    "read_identity",
    "signal_from_csq",
]


class AtPort(Protocol):
    """What a profile needs of the AT channel (`hw.modem.channel.AtChannel` is one)."""

    async def command(self, command: str, *, timeout: float | None = None,  # noqa: ASYNC109
                      prefix: str | Iterable[str] | None = None,
                      payload: bytes | None = None) -> Response: ...


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Seconds allowed per kind of operation (EC25 manual maximum response times)."""

    command: float = 5.0  # ordinary queries and settings
    network: float = 180.0  # +COPS read/set (up to 180 s)
    data: float = 150.0  # +CGACT / +QNETDEVCTL / +CGATT (up to 150 s)
    radio: float = 15.0  # +CFUN=0 / +CFUN=1 (up to 15 s)
    boot: float = 30.0  # +CFUN=1,1 or a power cycle until RDY
    boot_urcs: float = 15.0  # RDY until the boot URCs (+CPIN, SMS/PB DONE) are through
    sim_settle: float = 10.0  # SIM ready after a PIN or a slot switch
    register: float = 60.0  # registration after a reboot, before a data call

    def __post_init__(self) -> None:
        for name in self.__slots__:
            value = getattr(self, name)
            if not value > 0:
                raise ValueError(f"timeout {name} must be positive, not {value!r}")


#: An init command and whether it must succeed (False: an error is logged and ignored).
InitCommand = tuple[str, bool]

_APN = re.compile(r"[A-Za-z0-9][A-Za-z0-9.\-_]{0,99}")


def check_apn(apn: str) -> str:
    """`apn` if it is a plausible APN (TS 23.003 labels: letters, digits, `.-_`), else a
    `ValueError`: nothing that could break out of the quoted AT argument is ever sent."""
    if not isinstance(apn, str) or _APN.fullmatch(apn) is None:
        raise ValueError(f"not a valid APN: {apn!r}")
    return apn


def pdp_context_command(cid: int, apn: str, pdp_type: str = "IP") -> str:
    """`AT+CGDCONT=<cid>,"<pdp_type>","<apn>"` after checking its arguments."""
    if not 1 <= cid <= 24:
        raise ValueError(f"PDP context id {cid!r} is outside 1..24")
    if pdp_type not in ("IP", "IPV6", "IPV4V6"):
        raise ValueError(f"PDP type {pdp_type!r} is not IP, IPV6 or IPV4V6")
    return f'AT+CGDCONT={cid},"{pdp_type}","{check_apn(apn)}"'


def info_text(response: Response, *prefixes: str) -> str:
    """The information lines of `response` starting with one of `prefixes` (all lines when
    none are given), newline-joined for the parsers; `ParseError` when there are none."""
    if prefixes:
        wanted = tuple(p.upper() for p in prefixes)
        lines = [line for line in response.lines if line.upper().startswith(wanted)]
    else:
        lines = list(response.lines)
    if not lines:
        raise ParseError(response.command, "\n".join(response.lines),
                         f"no {' or '.join(prefixes) or 'information'} line in the answer")
    return "\n".join(lines)


async def read_identity(port: AtPort) -> ModemIdentity:
    """+CGMI/+CGMM (or, refused, `ATI`), +CGMR and +CGSN: the same on every modem, read
    before a profile is chosen (the profile is chosen from it). A revision or IMEI that is
    refused or does not parse is None."""
    manufacturer: str | None
    model: str | None
    try:
        manufacturer = parse_cgmi(info_text(await port.command("AT+CGMI")))
        model = parse_cgmm(info_text(await port.command("AT+CGMM")))
    except CommandError:
        ati = parse_ati(info_text(await port.command("ATI")))
        manufacturer, model = ati.manufacturer, ati.model
    revision: str | None
    imei: str | None
    try:
        revision = parse_cgmr(info_text(await port.command("AT+CGMR")))
    except (CommandError, ParseError):
        revision = None
    try:
        imei = parse_cgsn(info_text(await port.command("AT+CGSN")))
    except (CommandError, ParseError):
        imei = None
    return ModemIdentity(manufacturer=manufacturer, model=model, revision=revision,
                         imei=imei)


def rat_from_cesq(cesq: ExtendedSignalQuality) -> AccessTechnology | None:
    """The radio +CESQ measured on: RSRP -> LTE, RSCP -> UMTS, RXLEV -> GSM."""
    if cesq.rsrp_dbm is not None or cesq.rsrq_db is not None:
        return AccessTechnology.LTE
    if cesq.rscp_dbm is not None:
        return AccessTechnology.UMTS
    if cesq.rssi_dbm is not None:
        return AccessTechnology.GSM
    return None


def signal_from_csq(csq: SignalQuality, cesq: ExtendedSignalQuality | None) -> SignalReading:
    """+CSQ (RSSI) with +CESQ (RSRP/RSRQ) when the modem has it; no SINR in 27.007."""
    return SignalReading(
        rssi_dbm=csq.rssi_dbm,
        rsrp_dbm=None if cesq is None or cesq.rsrp_dbm is None else float(cesq.rsrp_dbm),
        rsrq_db=None if cesq is None else cesq.rsrq_db,
        sinr_db=None,
        rat=None if cesq is None else rat_from_cesq(cesq),
        source="+CSQ/+CESQ" if cesq is not None else "+CSQ",
    )


def _address_strings(addresses: tuple[PdpAddress, ...], cid: int) -> tuple[str | None, str | None]:
    for entry in addresses:
        if entry.cid == cid:
            return (None if entry.ipv4 is None else str(entry.ipv4),
                    None if entry.ipv6 is None else str(entry.ipv6))
    return None, None


class GenericProfile:
    """3GPP TS 27.007 only: +CSQ/+CESQ, +CCID, +CCLK, +CGDCONT/+CGATT/+CGACT/+CGPADDR.

    `timeouts` bound each command; `model` (from +CGMM) only names the modem in errors.
    Subclasses override the class attributes and the methods where their vendor differs.
    """

    name: ClassVar[str] = "generic"
    #: command reading the ICCID, and the prefixes its answer line may carry
    iccid_command: ClassVar[str] = "AT+CCID"
    iccid_prefixes: ClassVar[tuple[str, ...]] = ("+CCID:", "+ICCID:")
    supports_sim_switch: ClassVar[bool] = False
    #: vendor +CME codes meaning "busy, try again" (beside `hw.modem.modem.BUSY_CME_CODES`)
    busy_cme_codes: ClassVar[frozenset[int]] = frozenset()
    #: `DataStatus.method` of calls this profile makes
    data_method: ClassVar[str] = "pdp"

    def __init__(self, timeouts: Timeouts | None = None, *, model: str | None = None) -> None:
        self.timeouts = timeouts or Timeouts()
        self.model = model

    def __repr__(self) -> str:
        return f"<{type(self).__name__} model={self.model!r}>"

    # -- init ------------------------------------------------------------------------------
    def init_commands(self) -> tuple[InitCommand, ...]:
        """Sent by `Modem.initialise()` after `ATE0`, `AT+CMEE=1` and the identity queries:
        registration URCs with location (`=2`) for CS, PS and EPS (EPS `=3` where the
        modem takes it: the reject cause too), and packet-domain event URCs (`+CGEV`, so a
        network-side PDN deactivation is seen at once)."""
        return (
            ("AT+CREG=2", False),
            ("AT+CGREG=2", False),
            ("AT+CEREG=2", False),
            ("AT+CEREG=3", False),  # + reject cause where supported (else =2 stays)
            ("AT+CGEREP=2,1", False),
        )

    # -- SIM -------------------------------------------------------------------------------
    async def read_iccid(self, at: AtPort) -> str:
        """The ICCID (`ParseError` when the answer is not one)."""
        response = await at.command(self.iccid_command, timeout=self.timeouts.command,
                                    prefix=self.iccid_prefixes)
        text = info_text(response)
        line = text.splitlines()[0]
        prefix = next((p[:-1] for p in self.iccid_prefixes if line.upper().startswith(p)),
                      self.iccid_prefixes[0][:-1])
        return parse_iccid(line, prefix=prefix)

    async def read_sim_slot(self, at: AtPort) -> int | None:
        """The selected SIM slot (0-based); None: the modem has no slot selection."""
        return None

    async def switch_sim(self, at: AtPort, slot: int) -> None:
        """Select SIM slot `slot`. Not available in 27.007: `NotSupported`."""
        raise NotSupported("SIM slot switching", self.name, self.model)

    # -- radio -----------------------------------------------------------------------------
    async def read_signal(self, at: AtPort) -> SignalReading:
        """`AT+CSQ`, and `AT+CESQ` for RSRP/RSRQ where the modem knows it."""
        csq = parse_csq(info_text(await at.command("AT+CSQ", timeout=self.timeouts.command),
                                  "+CSQ:"))
        cesq: ExtendedSignalQuality | None
        try:
            response = await at.command("AT+CESQ", timeout=self.timeouts.command)
        except CommandError:
            cesq = None
        else:
            cesq = parse_cesq(info_text(response, "+CESQ:"))
        return signal_from_csq(csq, cesq)

    async def read_network_time(self, at: AtPort) -> NetworkTime | None:
        """`AT+CCLK?`: the modem clock (network-synchronised where the modem does NITZ)."""
        response = await at.command("AT+CCLK?", timeout=self.timeouts.command)
        return parse_cclk(info_text(response, "+CCLK:"))

    # -- packet data -----------------------------------------------------------------------
    async def prepare_data(self, at: AtPort) -> bool:
        """Configure what a data call needs; True when the modem must reboot for it to take
        effect (the `Modem` reboots, re-initialises and calls `activate_data`)."""
        return False

    async def activate_data(self, at: AtPort, apn: str, cid: int = 1) -> DataStatus:
        """`+CGDCONT=<cid>,"IP","<apn>"` -> `+CGATT=1` -> `+CGACT=1,<cid>` -> `+CGPADDR=<cid>`."""
        t = self.timeouts
        await at.command(pdp_context_command(cid, apn), timeout=t.command)
        await at.command("AT+CGATT=1", timeout=t.data)
        await at.command(f"AT+CGACT=1,{cid}", timeout=t.data)
        ip, ipv6 = await self.read_addresses(at, cid)
        return DataStatus(up=True, cid=cid, ip=ip, ipv6=ipv6, method=self.data_method, apn=apn)

    async def deactivate_data(self, at: AtPort, cid: int = 1) -> None:
        """`+CGACT=0,<cid>`."""
        await at.command(f"AT+CGACT=0,{cid}", timeout=self.timeouts.data)

    async def read_data_status(self, at: AtPort, cid: int = 1) -> DataStatus:
        """`+CGACT?` (is `cid` active) and `+CGPADDR=<cid>` (its addresses)."""
        response = await at.command("AT+CGACT?", timeout=self.timeouts.command)
        lines = [line for line in response.lines if line.startswith("+CGACT:")]
        states = parse_cgact("\n".join(lines))
        up = any(state.cid == cid and state.active for state in states)
        ip, ipv6 = await self.read_addresses(at, cid) if up else (None, None)
        return DataStatus(up=up, cid=cid, ip=ip, ipv6=ipv6, method="pdp")

    async def read_addresses(self, at: AtPort, cid: int) -> tuple[str | None, str | None]:
        """`+CGPADDR=<cid>` -> (IPv4, IPv6) as strings, None where not assigned."""
        response = await at.command(f"AT+CGPADDR={cid}", timeout=self.timeouts.command)
        lines = [line for line in response.lines if line.startswith("+CGPADDR:")]
        return _address_strings(parse_cgpaddr("\n".join(lines)), cid)

    async def read_dns(self, at: AtPort, cid: int) -> tuple[str, ...]:
        """`+CGCONTRDP=<cid>` -> the resolvers the network gave the context (TS 27.007
        §10.1.23; EC25 and SIM7600 answer it). A modem without the command answers ERROR:
        the `CommandError` passes through (`hw.modem.bearer` then knows none)."""
        response = await at.command(f"AT+CGCONTRDP={cid}", timeout=self.timeouts.command)
        lines = [line for line in response.lines if line.startswith("+CGCONTRDP:")]
        return context_dns(parse_cgcontrdp("\n".join(lines)), cid)
