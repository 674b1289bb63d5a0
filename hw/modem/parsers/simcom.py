"""Pure parsers for SIMCom SIM7500/SIM7600-series responses.

Sources: SIMCom SIM7500_SIM7600 Series AT Command Manual V1.x (+CPSI, +CNSMOD, +CNTP,
+CICCID), SIMCom A76XX Series AT Command Manual V1.09 clause 14.3.2 (the +CNTP result codes
SIM7600 shares), ModemManager's SIMCom plugin (`simtech_act_to_mm_act`: +CNSMOD 0..8) and
public captures named in the tests. +CSQ, +CREG... and +CCLK are standard: see `generic`.
No dual-SIM slot command is covered: none was found documented for the SIM7600.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Final

from hw.modem.errors import ParseError
from hw.modem.parsers.clock import quarter_hours
from hw.modem.parsers.identity import parse_iccid
from hw.modem.parsers.registration import AccessTechnology, split_mcc_mnc
from hw.modem.parsers.tokens import (
    line_fields,
    optional_hex,
    optional_int,
    payload,
    single_line,
    split_fields,
    to_int,
)

# --- +CPSI ------------------------------------------------------------------------------

#: `<dlbw>` / `<ulbw>` index of +CPSI -> MHz (same coding as the LTE bandwidth indices).
CPSI_BANDWIDTH_MHZ: Final[Mapping[int, float]] = {0: 1.4, 1: 3.0, 2: 5.0, 3: 10.0, 4: 15.0, 5: 20.0}


@dataclass(frozen=True, slots=True)
class SimcomSystemInfo:
    """`AT+CPSI?`. `system_mode` is e.g. "LTE", "WCDMA", "GSM", "NO SERVICE";
    `area_code` is the TAC (LTE) or LAC. Signal fields are LTE only.

    On SIM7600 `LTE` the modem reports RSRQ, RSRP and RSSI in tenths (dB / dBm x10, the
    Qualcomm convention the manual inherits: `-95,-1100,-650` is -9.5 dB, -110.0 dBm,
    -65.0 dBm); LTE-M / NB-IoT modes of the SIM7000 family ("LTE CAT-M1", "LTE NB-IOT")
    report whole units. `sinr_db` is the manual's `2 * <RSSNR> - 20` (-20..+30 dB) for
    `<RSSNR>` 0..25, else None."""

    system_mode: str
    operation_mode: str
    mcc: str | None
    mnc: str | None
    area_code: int | None
    cell_id: int | None
    pci: int | None
    band: str | None
    earfcn: int | None
    dl_bandwidth_mhz: float | None
    ul_bandwidth_mhz: float | None
    rsrq_db: float | None
    rsrp_dbm: float | None
    rssi_dbm: float | None
    rssnr: int | None
    sinr_db: float | None

    @property
    def lte_band(self) -> int | None:
        match = re.fullmatch(r"EUTRAN-BAND(\d+)", self.band or "", re.IGNORECASE)
        return None if match is None else int(match.group(1))

    @property
    def has_service(self) -> bool:
        return self.system_mode.upper() != "NO SERVICE"


def cpsi_sinr_db(rssnr: int) -> float | None:
    """SIM7600 manual, +CPSI: `SINR = 2 * <RSSNR> - 20`, range -20..30 dB."""
    return float(2 * rssnr - 20) if 0 <= rssnr <= 25 else None


def _scaled(value: str, line: str, what: str, scale: int) -> float | None:
    number = optional_int(value, "+CPSI", line, what)
    return None if number is None else number / scale


def parse_cpsi(text: str) -> SimcomSystemInfo:
    """`+CPSI: LTE,Online,450-05,0x2B5C,27447834,123,EUTRAN-BAND3,1550,5,5,-95,-1100,-650,12`
    (`<System Mode>,<Operation Mode>,<MCC>-<MNC>,<TAC>,<SCellID>,<PCellID>,<Frequency Band>,
    <earfcn>,<dlbw>,<ulbw>,<RSRQ>,<RSRP>,<RSSI>,<RSSNR>`), `+CPSI: NO SERVICE,Online`, and
    the GSM/WCDMA layouts (MCC-MNC, LAC and cell id are read from them)."""
    line = single_line(text, "+CPSI")
    fields = [f.text for f in split_fields(payload(line, "+CPSI"), "+CPSI", line)]
    if len(fields) < 2 or not fields[0]:
        raise ParseError("+CPSI", line, "expected <System Mode>,<Operation Mode>,...")
    mode, operation = fields[0], fields[1]
    mcc: str | None = None
    mnc: str | None = None
    area: int | None = None
    cell: int | None = None
    if len(fields) > 2:
        if len(fields) < 5:
            raise ParseError("+CPSI", line, "expected <MCC>-<MNC>,<TAC/LAC>,<cell id>")
        try:
            mcc, mnc = split_mcc_mnc(fields[2])
        except ValueError:
            raise ParseError("+CPSI", line, "<MCC>-<MNC> is not numeric") from None
        area = optional_hex(fields[3], "+CPSI", line, "<TAC>/<LAC>")
        cell = optional_int(fields[4], "+CPSI", line, "<SCellID>")
    if mode.upper().startswith("LTE") and len(fields) > 2:
        if len(fields) != 14:
            raise ParseError("+CPSI", line, "LTE +CPSI has 14 fields")
        scale = 10 if mode.upper() == "LTE" else 1
        rssnr = optional_int(fields[13], "+CPSI", line, "<RSSNR>")
        dlbw = optional_int(fields[8], "+CPSI", line, "<dlbw>")
        ulbw = optional_int(fields[9], "+CPSI", line, "<ulbw>")
        return SimcomSystemInfo(
            system_mode=mode, operation_mode=operation, mcc=mcc, mnc=mnc,
            area_code=area, cell_id=cell,
            pci=optional_int(fields[5], "+CPSI", line, "<PCellID>"),
            band=fields[6] or None,
            earfcn=optional_int(fields[7], "+CPSI", line, "<earfcn>"),
            dl_bandwidth_mhz=None if dlbw is None else CPSI_BANDWIDTH_MHZ.get(dlbw),
            ul_bandwidth_mhz=None if ulbw is None else CPSI_BANDWIDTH_MHZ.get(ulbw),
            rsrq_db=_scaled(fields[10], line, "<RSRQ>", scale),
            rsrp_dbm=_scaled(fields[11], line, "<RSRP>", scale),
            rssi_dbm=_scaled(fields[12], line, "<RSSI>", scale),
            rssnr=rssnr,
            sinr_db=cpsi_sinr_db(rssnr) if rssnr is not None and scale == 10 else None,
        )
    return SimcomSystemInfo(
        system_mode=mode, operation_mode=operation, mcc=mcc, mnc=mnc, area_code=area,
        cell_id=cell, pci=None, band=None, earfcn=None, dl_bandwidth_mhz=None,
        ul_bandwidth_mhz=None, rsrq_db=None, rsrp_dbm=None, rssi_dbm=None, rssnr=None,
        sinr_db=None)


# --- +CNSMOD ----------------------------------------------------------------------------

#: `<stat>` of +CNSMOD (SIM7500/SIM7600 manual) -> (name, 27.007 access technology).
#: ModemManager's SIMCom plugin maps 0..8 the same way.
CNSMOD_MODES: Final[Mapping[int, tuple[str, AccessTechnology | None]]] = {
    0: ("no service", None),
    1: ("GSM", AccessTechnology.GSM),
    2: ("GPRS", AccessTechnology.GSM),
    3: ("EGPRS (EDGE)", AccessTechnology.EDGE),
    4: ("WCDMA", AccessTechnology.UMTS),
    5: ("HSDPA only (WCDMA)", AccessTechnology.HSDPA),
    6: ("HSUPA only (WCDMA)", AccessTechnology.HSUPA),
    7: ("HSPA (HSDPA and HSUPA, WCDMA)", AccessTechnology.HSPA),
    8: ("LTE", AccessTechnology.LTE),
    9: ("TDS-CDMA", None),
    10: ("TDS-HSDPA only", None),
    11: ("TDS-HSUPA only", None),
    12: ("TDS-HSPA (TDS-HSDPA and TDS-HSUPA)", None),
    13: ("CDMA", None),
    14: ("EVDO", None),
    15: ("HYBRID (CDMA and EVDO)", None),
    16: ("1XLTE (CDMA and LTE)", None),
    23: ("eHRPD", None),
    24: ("HYBRID (CDMA and eHRPD)", None),
}


@dataclass(frozen=True, slots=True)
class SimcomNetworkMode:
    """+CNSMOD: `reporting` is the `<n>` of the read form (None in the URC form)."""

    reporting: bool | None
    code: int
    name: str
    act: AccessTechnology | None


def parse_cnsmod(text: str) -> SimcomNetworkMode:
    """`+CNSMOD: <n>,<stat>` (read) or `+CNSMOD: <stat>` (URC)."""
    line, fields = line_fields(text, "+CNSMOD")
    if len(fields) not in (1, 2):
        raise ParseError("+CNSMOD", line, "expected [<n>,]<stat>")
    reporting: bool | None = None
    if len(fields) == 2:
        n = to_int(fields[0].text, "+CNSMOD", line, "<n>")
        if n not in (0, 1):
            raise ParseError("+CNSMOD", line, f"<n> {n} is not 0 or 1")
        reporting = n == 1
    code = to_int(fields[-1].text, "+CNSMOD", line, "<stat>")
    try:
        name, act = CNSMOD_MODES[code]
    except KeyError:
        raise ParseError("+CNSMOD", line, f"unknown <stat> {code}") from None
    return SimcomNetworkMode(reporting=reporting, code=code, name=name, act=act)


# --- +CNTP ------------------------------------------------------------------------------

#: +CNTP `<err>` (SIMCom A76XX manual V1.09 clause 14.3.2; same list in the SIM7600 manual).
CNTP_RESULTS: Final[Mapping[int, str]] = {
    0: "Operation succeeded",
    1: "Unknown error",
    2: "Wrong parameter",
    3: "Wrong date and time calculated",
    4: "Network error",
    5: "Time zone error",
    6: "Time out error",
}


@dataclass(frozen=True, slots=True)
class SimcomNtpServer:
    """`AT+CNTP?`: the NTP host and the local zone applied to the synchronised time."""

    host: str
    utc_offset: timedelta


@dataclass(frozen=True, slots=True)
class SimcomNtpResult:
    """The `+CNTP: <err>` that follows `AT+CNTP` (0 = the clock was set)."""

    code: int
    message: str | None

    @property
    def succeeded(self) -> bool:
        return self.code == 0


def parse_cntp_server(text: str) -> SimcomNtpServer:
    """`+CNTP: "pool.ntp.org",32` (zone in quarter hours; see `quarter_hours`)."""
    line, fields = line_fields(text, "+CNTP")
    if len(fields) != 2 or not fields[0].quoted or not fields[0].text:
        raise ParseError("+CNTP", line, 'expected "<host>",<timezone>')
    quarters = to_int(fields[1].text, "+CNTP", line, "<timezone>")
    try:
        zone = quarter_hours(quarters)
    except ValueError as exc:
        raise ParseError("+CNTP", line, str(exc)) from None
    offset = zone.utcoffset(None)
    assert offset is not None
    return SimcomNtpServer(host=fields[0].text, utc_offset=offset)


def parse_cntp_result(text: str) -> SimcomNtpResult:
    """`+CNTP: 0` after `AT+CNTP`."""
    line = single_line(text, "+CNTP")
    code = to_int(payload(line, "+CNTP"), "+CNTP", line, "<err>")
    if code < 0:
        raise ParseError("+CNTP", line, "negative <err>")
    return SimcomNtpResult(code=code, message=CNTP_RESULTS.get(code))


# --- +CICCID ----------------------------------------------------------------------------


def parse_ciccid(text: str) -> str:
    """`AT+CICCID` -> `+ICCID: 8982...` -> the ICCID (trailing F padding removed)."""
    return parse_iccid(text, prefix="+ICCID")
