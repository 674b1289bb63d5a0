"""Quectel EC2x/EG2x profile: +QCSQ/+QENG signal, +QCCID, +QLTS time, the ECM data path
(`+QCFG="usbnet"` + `+QNETDEVCTL`) and +QDSIM slot switching.

Sources: Quectel EC25&EC21 AT Commands Manual (+QCSQ, +QENG, +QLTS, +QCFG, +QDSIM, +QCCID),
ModemManager's Quectel plugin (`+QNETDEVCTL` connect types, ECM bring-up).
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

from hw.modem.errors import CommandError, ParseError
from hw.modem.parsers.clock import NetworkTime
from hw.modem.parsers.quectel import (
    QuectelServingCell,
    QuectelSignal,
    QuectelSysMode,
    QuectelUsbNet,
    parse_qccid,
    parse_qcfg_usbnet,
    parse_qcsq_lines,
    parse_qdsim,
    parse_qeng_servingcell,
    parse_qlts,
    parse_qnetdevctl,
)
from hw.modem.parsers.registration import AccessTechnology
from hw.modem.profiles.generic import (
    AtPort,
    GenericProfile,
    InitCommand,
    Timeouts,
    info_text,
    pdp_context_command,
)
from hw.modem.status import DataStatus, SignalReading

__all__ = [
    "QuectelProfile",
    "netdevctl_command",
    "rat_from_sysmode",
    "signal_from_qcsq",
    "signal_from_qcsq_lines",
    "signal_from_qeng",
    "usbnet_command",
]

_SYSMODE_RAT: dict[QuectelSysMode, AccessTechnology | None] = {
    QuectelSysMode.NO_SERVICE: None,
    QuectelSysMode.GSM: AccessTechnology.GSM,
    QuectelSysMode.WCDMA: AccessTechnology.UMTS,
    QuectelSysMode.TDSCDMA: None,
    QuectelSysMode.LTE: AccessTechnology.LTE,
    QuectelSysMode.CAT_M: AccessTechnology.LTE,  # 27.007 has no LTE-M <AcT>; LTE is closest
    QuectelSysMode.NB_IOT: AccessTechnology.LTE_NB_IOT,
    QuectelSysMode.NR5G: AccessTechnology.NR_5GCN,
}

_QENG_RAT: dict[str, AccessTechnology] = {
    "LTE": AccessTechnology.LTE,
    "CAT-M": AccessTechnology.LTE,
    "CAT-M1": AccessTechnology.LTE,
    "EMTC": AccessTechnology.LTE,
    "NBIOT": AccessTechnology.LTE_NB_IOT,
    "NB-IOT": AccessTechnology.LTE_NB_IOT,
    "CAT-NB": AccessTechnology.LTE_NB_IOT,
    "WCDMA": AccessTechnology.UMTS,
    "GSM": AccessTechnology.GSM,
    "NR5G-SA": AccessTechnology.NR_5GCN,
}


def rat_from_sysmode(mode: QuectelSysMode) -> AccessTechnology | None:
    return _SYSMODE_RAT[mode]


def signal_from_qcsq(q: QuectelSignal) -> SignalReading:
    """+QCSQ -> reading (SINR in dB from the 1/5 dB raw value; `NOSERVICE`: all None)."""
    return SignalReading(
        rssi_dbm=q.rssi_dbm,
        rsrp_dbm=None if q.rsrp_dbm is None else float(q.rsrp_dbm),
        rsrq_db=None if q.rsrq_db is None else float(q.rsrq_db),
        sinr_db=q.sinr_db,
        rat=rat_from_sysmode(q.sysmode),
        source="+QCSQ",
    )


def signal_from_qcsq_lines(lines: tuple[QuectelSignal, ...]) -> SignalReading:
    """Several +QCSQ lines (RM5xx EN-DC: `"LTE"` anchor, then `"NR5G"`): the anchor's
    values, access technology EN-DC; a single line as `signal_from_qcsq`."""
    first = signal_from_qcsq(lines[0])
    if len(lines) > 1 and any(q.sysmode is QuectelSysMode.NR5G for q in lines[1:]):
        return dataclasses.replace(first, rat=AccessTechnology.EN_DC)
    return first


def signal_from_qeng(cell: QuectelServingCell) -> SignalReading:
    """`+QENG="servingcell"` -> reading (`SEARCH`: all None; LIMSRV as camped). EN-DC (an
    NR5G-NSA leg): the LTE anchor's values, access technology EN-DC."""
    rat = None if cell.rat is None else _QENG_RAT.get(cell.rat.upper())
    if cell.nr is not None:
        rat = AccessTechnology.EN_DC
    return SignalReading(
        rssi_dbm=cell.rssi_dbm,
        rsrp_dbm=None if cell.rsrp_dbm is None else float(cell.rsrp_dbm),
        rsrq_db=None if cell.rsrq_db is None else float(cell.rsrq_db),
        sinr_db=cell.sinr_db,
        rat=rat,
        source="+QENG",
    )


def usbnet_command(mode: QuectelUsbNet | None = None) -> str:
    """`AT+QCFG="usbnet"` (query) or `AT+QCFG="usbnet",<mode>` (set; reboot to apply)."""
    return 'AT+QCFG="usbnet"' if mode is None else f'AT+QCFG="usbnet",{int(mode)}'


def netdevctl_command(up: bool, cid: int = 1, urc: bool = True) -> str:
    """`AT+QNETDEVCTL=<op>,<cid>,<urc_en>`: op 1 connects once, 0 disconnects."""
    if not 1 <= cid <= 16:
        raise ValueError(f"context id {cid!r} is outside 1..16")
    return f"AT+QNETDEVCTL={int(up)},{cid},{int(urc)}"


class QuectelProfile(GenericProfile):
    """Quectel EC25/EG25 (and family). `usbnet` is the USB network function the box uses:
    ECM (the default) brings data up with `+QNETDEVCTL`, the host sees an Ethernet
    interface; any other mode makes `activate_data` the generic `+CGACT` path (the host
    side is then QMI/MBIM tooling's business)."""

    name: ClassVar[str] = "quectel"
    iccid_command: ClassVar[str] = "AT+QCCID"
    iccid_prefixes: ClassVar[tuple[str, ...]] = ("+QCCID:",)
    supports_sim_switch: ClassVar[bool] = True

    def __init__(
        self,
        timeouts: Timeouts | None = None,
        *,
        model: str | None = None,
        usbnet: QuectelUsbNet = QuectelUsbNet.ECM,
    ) -> None:
        super().__init__(timeouts, model=model)
        self.usbnet = usbnet

    @property
    def ecm(self) -> bool:
        return self.usbnet is QuectelUsbNet.ECM

    def init_commands(self) -> tuple[InitCommand, ...]:
        """Generic ones, plus SIM hot-swap reports (`AT+QSIMSTAT=1`: `+QSIMSTAT: 1,0|1`
        when the SIM is pulled or inserted; needs the board's SIM-detect line, set once
        with `AT+QSIMDET=1,<level>`, a hardware matter left to the installer, so a modem
        without it just refuses and `+QUSIM: 1` still tells an inserted SIM) and time
        zone reports (`AT+CTZR=2`: `+CTZE`)."""
        return (*super().init_commands(), ("AT+QSIMSTAT=1", False), ("AT+CTZR=2", False))

    # -- SIM -------------------------------------------------------------------------------
    async def read_iccid(self, at: AtPort) -> str:
        response = await at.command(self.iccid_command, timeout=self.timeouts.command)
        return parse_qccid(info_text(response, "+QCCID:"))

    async def read_sim_slot(self, at: AtPort) -> int | None:
        response = await at.command("AT+QDSIM?", timeout=self.timeouts.command)
        return parse_qdsim(info_text(response, "+QDSIM:"))

    async def switch_sim(self, at: AtPort, slot: int) -> None:
        """`AT+QDSIM=<slot>` (0 = SIM1, 1 = SIM2); the SIM re-initialises afterwards."""
        if slot not in (0, 1):
            raise ValueError(f"SIM slot {slot!r} is not 0 or 1")
        await at.command(f"AT+QDSIM={slot}", timeout=self.timeouts.command)

    # -- radio -----------------------------------------------------------------------------
    async def read_signal(self, at: AtPort) -> SignalReading:
        """`AT+QCSQ` (RSSI, RSRP, SINR, RSRQ); firmware without it: `AT+QENG="servingcell"`;
        without that either: +CSQ/+CESQ."""
        try:
            response = await at.command("AT+QCSQ", timeout=self.timeouts.command)
        except CommandError:
            pass
        else:
            return signal_from_qcsq_lines(parse_qcsq_lines(info_text(response, "+QCSQ:")))
        try:
            response = await at.command('AT+QENG="servingcell"', timeout=self.timeouts.command)
        except CommandError:
            return await super().read_signal(at)
        return signal_from_qeng(parse_qeng_servingcell(info_text(response, "+QENG:")))

    async def read_network_time(self, at: AtPort) -> NetworkTime | None:
        """`AT+QLTS=2`: the network's local time and zone (quarter hours) from NITZ; None
        before the network sent any (the RTC is then not trusted)."""
        response = await at.command("AT+QLTS=2", timeout=self.timeouts.command)
        return parse_qlts(info_text(response, "+QLTS:"), mode=2)

    # -- packet data -----------------------------------------------------------------------
    async def prepare_data(self, at: AtPort) -> bool:
        """Make sure `AT+QCFG="usbnet"` is `self.usbnet` (stored in NV); True when it had to
        be changed (the change takes effect after a reboot)."""
        try:
            response = await at.command(usbnet_command(), timeout=self.timeouts.command)
            current = parse_qcfg_usbnet(info_text(response, "+QCFG:"))
        except (CommandError, ParseError):
            return False  # firmware without the setting: nothing to configure
        if current is self.usbnet:
            return False
        await at.command(usbnet_command(self.usbnet), timeout=self.timeouts.command)
        return True

    async def activate_data(self, at: AtPort, apn: str, cid: int = 1) -> DataStatus:
        """ECM: `+CGDCONT=<cid>,"IP","<apn>"` -> `+QNETDEVCTL=1,<cid>,1` -> `+CGPADDR`."""
        if not self.ecm:
            return await super().activate_data(at, apn, cid)
        t = self.timeouts
        await at.command(pdp_context_command(cid, apn), timeout=t.command)
        await at.command(netdevctl_command(True, cid), timeout=t.data)
        ip, ipv6 = await self.read_addresses(at, cid)
        return DataStatus(up=True, cid=cid, ip=ip, ipv6=ipv6, method="ecm", apn=apn)

    async def deactivate_data(self, at: AtPort, cid: int = 1) -> None:
        if not self.ecm:
            await super().deactivate_data(at, cid)
            return
        await at.command(netdevctl_command(False, cid, urc=False), timeout=self.timeouts.data)

    async def read_data_status(self, at: AtPort, cid: int = 1) -> DataStatus:
        """ECM: `AT+QNETDEVCTL?` says whether the call on `cid` is connected."""
        if not self.ecm:
            return await super().read_data_status(at, cid)
        response = await at.command("AT+QNETDEVCTL?", timeout=self.timeouts.command)
        entries = parse_qnetdevctl(info_text(response, "+QNETDEVCTL:"))
        up = any(entry.cid == cid and entry.connected for entry in entries)
        ip, ipv6 = await self.read_addresses(at, cid) if up else (None, None)
        return DataStatus(up=up, cid=cid, ip=ip, ipv6=ipv6, method="ecm")
