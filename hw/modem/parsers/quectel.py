"""Pure parsers for Quectel EC2x/EG2x (and BG9x where the format is shared) responses.

Sources: Quectel EC25&EC21 AT Commands Manual (V1.3 / V2.0: +QCSQ, +QNWINFO, +QLTS, +QCFG,
+QDSIM, +QSIMSTAT, +QCCID), the Quectel forum answer on +QCSQ conversion
(forums.quectel.com/t/at-qcsq-command-conversion-on-eg21-g/54722), ModemManager's Quectel
helpers (`mm-modem-helpers-quectel.c`: +QNETDEVCTL) and public captures named in the tests.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import IntEnum, StrEnum
from typing import Final

from hw.modem.errors import ParseError
from hw.modem.parsers.clock import NetworkTime, parse_time_value, quoted_value
from hw.modem.parsers.identity import parse_iccid
from hw.modem.parsers.registration import split_mcc_mnc
from hw.modem.parsers.tokens import (
    Field,
    int_fields,
    line_fields,
    optional_hex,
    optional_int,
    payload,
    response_lines,
    single_line,
    split_fields,
    to_int,
)

# --- +QCSQ ------------------------------------------------------------------------------


class QuectelSysMode(StrEnum):
    """The `<sysmode>` of +QCSQ."""

    NO_SERVICE = "no_service"
    GSM = "gsm"
    WCDMA = "wcdma"
    TDSCDMA = "tdscdma"
    LTE = "lte"
    CAT_M = "cat_m"
    NB_IOT = "nb_iot"
    NR5G = "nr5g"


_SYSMODES: Final[Mapping[str, QuectelSysMode]] = {
    "NOSERVICE": QuectelSysMode.NO_SERVICE,
    "NO SERVICE": QuectelSysMode.NO_SERVICE,
    "GSM": QuectelSysMode.GSM,
    "WCDMA": QuectelSysMode.WCDMA,
    "TDSCDMA": QuectelSysMode.TDSCDMA,
    "LTE": QuectelSysMode.LTE,
    "CAT-M": QuectelSysMode.CAT_M,
    "CAT-M1": QuectelSysMode.CAT_M,
    "EMTC": QuectelSysMode.CAT_M,
    "NBIOT": QuectelSysMode.NB_IOT,
    "NB-IOT": QuectelSysMode.NB_IOT,
    "CAT-NB": QuectelSysMode.NB_IOT,
    "CAT-NB1": QuectelSysMode.NB_IOT,
    "NR5G": QuectelSysMode.NR5G,
}

#: Values after <sysmode>: GSM rssi; WCDMA/TD-SCDMA rssi,rscp,ecio; LTE-like rssi,rsrp,sinr,rsrq;
#: NR5G (RM5xx/RG5xx) rsrp,sinr,rsrq — no RSSI, SINR in dB. Extra trailing values (some
#: firmware append `-`) are ignored.
_QCSQ_COUNTS: Final[Mapping[QuectelSysMode, int]] = {
    QuectelSysMode.NO_SERVICE: 0,
    QuectelSysMode.GSM: 1,
    QuectelSysMode.WCDMA: 3,
    QuectelSysMode.TDSCDMA: 3,
    QuectelSysMode.LTE: 4,
    QuectelSysMode.CAT_M: 4,
    QuectelSysMode.NB_IOT: 4,
    QuectelSysMode.NR5G: 3,
}


@dataclass(frozen=True, slots=True)
class QuectelSignal:
    """+QCSQ in physical units; fields not reported for `sysmode` are None.

    `sinr_raw` is the reported LTE SINR (fifths of a dB, 0..250); `sinr_db` is
    `sinr_raw / 5 - 20` (-20..+30 dB), None when the raw value is outside 0..250."""

    sysmode: QuectelSysMode
    rssi_dbm: int | None
    rsrp_dbm: int | None
    sinr_raw: int | None
    sinr_db: float | None
    rsrq_db: int | None
    rscp_dbm: int | None
    ecio_db: int | None


def qcsq_sinr_db(raw: int) -> float | None:
    """+QCSQ LTE SINR: "values are in 1/5th of a dB, range 0-250 which translates to
    -20 dB - +30 dB" (Quectel manuals; forum answer above): `raw / 5 - 20`."""
    return raw / 5 - 20 if 0 <= raw <= 250 else None


def nr5g_sinr_db(value: int | None) -> float | None:
    """RM5xx NR5G SINR, reported in dB; None for "not available" sentinels (-32768,
    -3276, 255...) outside -30..+60 dB."""
    return None if value is None or not -30 <= value <= 60 else float(value)


def _nr5g_signal(values: list[int | None]) -> QuectelSignal:
    rsrp, sinr, rsrq = values[:3]
    return QuectelSignal(sysmode=QuectelSysMode.NR5G, rssi_dbm=None, rsrp_dbm=rsrp,
                         sinr_raw=sinr, sinr_db=nr5g_sinr_db(sinr), rsrq_db=rsrq,
                         rscp_dbm=None, ecio_db=None)


def parse_qcsq(text: str) -> QuectelSignal:
    """`+QCSQ: "LTE",<rssi>,<rsrp>,<sinr>,<rsrq>`, `+QCSQ: "NOSERVICE"`, `"GSM",<rssi>`,
    `"WCDMA",<rssi>,<rscp>,<ecio>`, `"CAT-M1"`/`"eMTC"`/`"NBIoT"` like LTE, and the
    RM5xx/RG5xx `"NR5G",<rsrp>,<sinr>,<rsrq>` (SINR in dB). `-` reads as None.

    EG21-G reports the LTE RSSI as a positive magnitude (`"LTE",77,...` for -77 dBm, per
    Quectel support); a positive RSSI is therefore negated."""
    line, fields = line_fields(text, "+QCSQ")
    try:
        sysmode = _SYSMODES[fields[0].text.upper()]
    except KeyError:
        raise ParseError("+QCSQ", line, "unknown <sysmode>") from None
    wanted = _QCSQ_COUNTS[sysmode]
    if len(fields) - 1 < wanted:
        raise ParseError("+QCSQ", line, f"{sysmode.value} takes {wanted} values")
    if sysmode is QuectelSysMode.NR5G:
        return _nr5g_signal([optional_int(f.text, "+QCSQ", line, "value")
                             for f in fields[1:wanted + 1]])
    if len(fields) - 1 != wanted:
        raise ParseError("+QCSQ", line, f"{sysmode.value} takes {wanted} values")
    values = [to_int(f.text, "+QCSQ", line, "value") for f in fields[1:]]
    rssi = values[0] if values else None
    if rssi is not None and rssi > 0:
        rssi = -rssi
    if sysmode in (QuectelSysMode.LTE, QuectelSysMode.CAT_M, QuectelSysMode.NB_IOT):
        _, rsrp, sinr, rsrq = values
        return QuectelSignal(sysmode=sysmode, rssi_dbm=rssi, rsrp_dbm=rsrp, sinr_raw=sinr,
                             sinr_db=qcsq_sinr_db(sinr), rsrq_db=rsrq, rscp_dbm=None,
                             ecio_db=None)
    if sysmode in (QuectelSysMode.WCDMA, QuectelSysMode.TDSCDMA):
        return QuectelSignal(sysmode=sysmode, rssi_dbm=rssi, rsrp_dbm=None, sinr_raw=None,
                             sinr_db=None, rsrq_db=None, rscp_dbm=values[1], ecio_db=values[2])
    return QuectelSignal(sysmode=sysmode, rssi_dbm=rssi, rsrp_dbm=None, sinr_raw=None,
                         sinr_db=None, rsrq_db=None, rscp_dbm=None, ecio_db=None)


def parse_qcsq_lines(text: str) -> tuple[QuectelSignal, ...]:
    """Every `+QCSQ:` line of an answer: an RM5xx in EN-DC (NR5G-NSA) reports its LTE
    anchor and its NR leg on two lines (`"LTE",...` then `"NR5G",...`)."""
    lines = response_lines(text)
    if not lines:
        raise ParseError("+QCSQ", text, "empty response")
    return tuple(parse_qcsq(line) for line in lines)


# --- +QNWINFO ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class QuectelNetworkInfo:
    """+QNWINFO: access technology text (`"FDD LTE"`), numeric operator, band text
    (`"LTE BAND 3"`) and channel (EARFCN/UARFCN/ARFCN). All None for `No Service`."""

    act: str | None
    operator: str | None
    band: str | None
    channel: int | None

    @property
    def has_service(self) -> bool:
        return self.act is not None

    @property
    def mcc(self) -> str | None:
        return None if self.operator is None else split_mcc_mnc(self.operator)[0]

    @property
    def mnc(self) -> str | None:
        return None if self.operator is None else split_mcc_mnc(self.operator)[1]

    @property
    def lte_band(self) -> int | None:
        """The E-UTRA band number of `LTE BAND <n>`."""
        match = re.fullmatch(r"LTE BAND (\d+)", self.band or "", re.IGNORECASE)
        return None if match is None else int(match.group(1))


def parse_qnwinfo(text: str) -> QuectelNetworkInfo:
    """`+QNWINFO: "FDD LTE","45005","LTE BAND 3",1550` or `+QNWINFO: No Service`."""
    line = single_line(text, "+QNWINFO")
    body = payload(line, "+QNWINFO")
    if body.strip('"').strip().lower() == "no service":
        return QuectelNetworkInfo(act=None, operator=None, band=None, channel=None)
    fields = split_fields(body, "+QNWINFO", line)
    if len(fields) != 4:
        raise ParseError("+QNWINFO", line, "expected <act>,<oper>,<band>,<channel>")
    operator = fields[1].text
    try:
        split_mcc_mnc(operator)
    except ValueError:
        raise ParseError("+QNWINFO", line, "<oper> is not a numeric MCC/MNC") from None
    return QuectelNetworkInfo(act=fields[0].text, operator=operator, band=fields[2].text or None,
                              channel=to_int(fields[3].text, "+QNWINFO", line, "<channel>"))


# --- +QENG="servingcell" ----------------------------------------------------------------

#: `<UL_bandwidth>` / `<DL_bandwidth>` index of LTE +QENG -> MHz.
LTE_BANDWIDTH_MHZ: Final[Mapping[int, float]] = {0: 1.4, 1: 3.0, 2: 5.0, 3: 10.0, 4: 15.0, 5: 20.0}

_LTE_LIKE: Final = frozenset({"LTE", "EMTC", "CAT-M", "CAT-M1", "NBIOT", "NB-IOT", "CAT-NB"})


@dataclass(frozen=True, slots=True)
class QuectelNrCell:
    """The NR leg of an EN-DC (NR5G-NSA) connection: `+QENG: "NR5G-NSA",<MCC>,<MNC>,<PCID>,
    <RSRP>,<SINR>,<RSRQ>,<ARFCN>,<band>,<NR_DL_bandwidth>,<scs>` (RM5xx/RM520N manuals);
    "-" reads as None. SINR is in dB."""

    pci: int | None
    rsrp_dbm: int | None
    sinr_db: float | None
    rsrq_db: int | None
    arfcn: int | None
    band: int | None


@dataclass(frozen=True, slots=True)
class QuectelServingCell:
    """`AT+QENG="servingcell"`. `state` is SEARCH / LIMSRV / NOCONN / CONNECT; the cell
    fields are None in SEARCH/LIMSRV-only answers, and LTE-only fields are None on GSM/WCDMA
    (which fill `lac` instead of `tac`). "-" (not available) reads as None.

    `sinr_raw` is the reported value. `sinr_db` follows the EC2x convention
    `2 * raw - 20` for raw 0..25 (-20..+30 dB) as used by the ROOTer firmware's Quectel
    script (ofmodemsandmen/RooterSource `quecteldata.sh`); it is only computed for `rat`
    "LTE" and raw values in range, because other Quectel families (RM5xx report dB, BG9x
    eMTC) and some firmware report this field differently. The manual was not at hand."""

    state: str
    rat: str | None
    duplex: str | None
    mcc: str | None
    mnc: str | None
    cell_id: int | None
    pci: int | None
    earfcn: int | None
    band: int | None
    ul_bandwidth_mhz: float | None
    dl_bandwidth_mhz: float | None
    tac: int | None
    lac: int | None
    rsrp_dbm: int | None
    rsrq_db: int | None
    rssi_dbm: int | None
    sinr_raw: int | None
    sinr_db: float | None
    srxlev: int | None
    nr: QuectelNrCell | None = None


def qeng_lte_sinr_db(raw: int) -> float | None:
    """EC2x `+QENG` LTE SINR: `2 * raw - 20` for 0..25, else None (see QuectelServingCell)."""
    return float(2 * raw - 20) if 0 <= raw <= 25 else None


def _bandwidth(value: str, line: str) -> float | None:
    index = optional_int(value, "+QENG", line, "bandwidth")
    return None if index is None else LTE_BANDWIDTH_MHZ.get(index)


def _qeng_fields(text: str) -> tuple[str, list[Field], QuectelNrCell | None]:
    """The serving-cell line (fields from `"servingcell"` on) and the NR leg, if any.

    EN-DC layout (RM5xx): `"servingcell",<state>` then `"LTE",<is_tdd>,...` and
    `"NR5G-NSA",...` on lines of their own; the LTE line continues the first one."""
    lines = response_lines(text)
    if not lines:
        raise ParseError("+QENG", text, "empty response")
    first = lines[0]
    fields = split_fields(payload(first, "+QENG"), "+QENG", first)
    if fields[0].text.lower() != "servingcell" or len(fields) < 2:
        raise ParseError("+QENG", first, 'expected "servingcell",<state>,...')
    line, nr = first, None
    for extra in lines[1:]:
        rest = split_fields(payload(extra, "+QENG"), "+QENG", extra)
        kind = rest[0].text.upper()
        if kind == "LTE" and len(fields) == 2:
            line, fields = extra, fields + rest
        elif kind == "NR5G-NSA":
            nr = _nr_nsa_leg(rest, extra)
        else:
            raise ParseError("+QENG", text, "unexpected extra line")
    return line, fields, nr


def _nr_nsa_leg(fields: list[Field], line: str) -> QuectelNrCell | None:
    """`"NR5G-NSA",<MCC>,<MNC>,<PCID>,<RSRP>,<SINR>,<RSRQ>,<ARFCN>,<band>,...`; None for
    the empty form (`"NR5G-NSA",` — no NR leg at the moment)."""
    values = [f.text for f in fields] + [""] * 11
    if not any(values[1:10]):
        return None
    sinr = optional_int(values[5], "+QENG", line, "<SINR>")
    return QuectelNrCell(
        pci=optional_int(values[3], "+QENG", line, "<PCID>"),
        rsrp_dbm=optional_int(values[4], "+QENG", line, "<RSRP>"),
        sinr_db=nr5g_sinr_db(sinr),
        rsrq_db=optional_int(values[6], "+QENG", line, "<RSRQ>"),
        arfcn=optional_int(values[7], "+QENG", line, "<ARFCN>"),
        band=optional_int(values[8], "+QENG", line, "<band>"))


def _qeng_nr_sa(state: str, values: list[str], line: str) -> QuectelServingCell:
    """`"servingcell",<state>,"NR5G-SA",<duplex>,<MCC>,<MNC>,<cellID>,<PCID>,<TAC>,<ARFCN>,
    <band>,<NR_DL_bandwidth>,<RSRP>,<RSRQ>,<SINR>,<scs>,<srxlev>` (RM5xx/RM520N)."""
    if len(values) < 15:
        raise ParseError("+QENG", line, "NR5G-SA serving cell needs at least 15 fields")
    sinr = optional_int(values[14], "+QENG", line, "<SINR>")
    return QuectelServingCell(
        state=state, rat=values[2], duplex=values[3] or None,
        mcc=values[4] or None, mnc=values[5] or None,
        cell_id=optional_hex(values[6], "+QENG", line, "<cellID>"),
        pci=optional_int(values[7], "+QENG", line, "<PCID>"),
        earfcn=optional_int(values[9], "+QENG", line, "<ARFCN>"),
        band=optional_int(values[10], "+QENG", line, "<band>"),
        ul_bandwidth_mhz=None, dl_bandwidth_mhz=None,
        tac=optional_hex(values[8], "+QENG", line, "<TAC>"), lac=None,
        rsrp_dbm=optional_int(values[12], "+QENG", line, "<RSRP>"),
        rsrq_db=optional_int(values[13], "+QENG", line, "<RSRQ>"),
        rssi_dbm=None, sinr_raw=sinr, sinr_db=nr5g_sinr_db(sinr),
        srxlev=(optional_int(values[16], "+QENG", line, "<srxlev>")
                if len(values) > 16 else None))


def parse_qeng_servingcell(text: str) -> QuectelServingCell:
    """LTE: `"servingcell",<state>,"LTE",<is_tdd>,<MCC>,<MNC>,<cellID>,<PCID>,<earfcn>,
    <freq_band_ind>,<UL_bandwidth>,<DL_bandwidth>,<TAC>,<RSRP>,<RSRQ>,<RSSI>,<SINR>
    [,<srxlev>]` (RM5xx/EG18 add `<CQI>,<tx_power>` before `<srxlev>`);
    GSM/WCDMA: `"servingcell",<state>,<rat>,<MCC>,<MNC>,<LAC>,<cellID>,...`;
    NR5G-SA (RM5xx/RG5xx, see `_qeng_nr_sa`); EN-DC as three lines, the NR5G-NSA leg in
    `nr`; `"servingcell","SEARCH"` alone. `<state>` LIMSRV (limited service: camped,
    emergency calls only) reads like NOCONN."""
    line, fields, nr = _qeng_fields(text)
    cell = _qeng_cell(line, fields)
    return cell if nr is None else dataclasses.replace(cell, nr=nr)


def _qeng_cell(line: str, fields: list[Field]) -> QuectelServingCell:
    state = fields[1].text.upper()
    if not state:
        raise ParseError("+QENG", line, "no <state>")
    empty = QuectelServingCell(
        state=state, rat=None, duplex=None, mcc=None, mnc=None, cell_id=None, pci=None,
        earfcn=None, band=None, ul_bandwidth_mhz=None, dl_bandwidth_mhz=None, tac=None, lac=None,
        rsrp_dbm=None, rsrq_db=None, rssi_dbm=None, sinr_raw=None, sinr_db=None, srxlev=None)
    if len(fields) == 2:
        return empty
    rat = fields[2].text
    values = [f.text for f in fields]
    if rat.upper() == "NR5G-SA":
        return _qeng_nr_sa(state, values, line)
    if rat.upper() in _LTE_LIKE:
        if len(values) < 17:
            raise ParseError("+QENG", line, "LTE serving cell needs at least 17 fields")
        sinr = optional_int(values[16], "+QENG", line, "<SINR>")
        srxlev_at = 19 if len(values) >= 20 else 17
        return QuectelServingCell(
            state=state, rat=rat, duplex=values[3] or None,
            mcc=values[4] or None, mnc=values[5] or None,
            cell_id=optional_hex(values[6], "+QENG", line, "<cellID>"),
            pci=optional_int(values[7], "+QENG", line, "<PCID>"),
            earfcn=optional_int(values[8], "+QENG", line, "<earfcn>"),
            band=optional_int(values[9], "+QENG", line, "<freq_band_ind>"),
            ul_bandwidth_mhz=_bandwidth(values[10], line),
            dl_bandwidth_mhz=_bandwidth(values[11], line),
            tac=optional_hex(values[12], "+QENG", line, "<TAC>"),
            lac=None,
            rsrp_dbm=optional_int(values[13], "+QENG", line, "<RSRP>"),
            rsrq_db=optional_int(values[14], "+QENG", line, "<RSRQ>"),
            rssi_dbm=optional_int(values[15], "+QENG", line, "<RSSI>"),
            sinr_raw=sinr,
            sinr_db=qeng_lte_sinr_db(sinr) if sinr is not None and rat.upper() == "LTE"
            else None,
            srxlev=(optional_int(values[srxlev_at], "+QENG", line, "<srxlev>")
                    if len(values) > srxlev_at else None),
        )
    if rat.upper() in ("GSM", "WCDMA"):
        if len(values) < 7:
            raise ParseError("+QENG", line, f"{rat} serving cell needs at least 7 fields")
        return QuectelServingCell(
            state=state, rat=rat, duplex=None, mcc=values[3] or None, mnc=values[4] or None,
            cell_id=optional_hex(values[6], "+QENG", line, "<cellID>"), pci=None, earfcn=None,
            band=None, ul_bandwidth_mhz=None, dl_bandwidth_mhz=None, tac=None,
            lac=optional_hex(values[5], "+QENG", line, "<LAC>"), rsrp_dbm=None, rsrq_db=None,
            rssi_dbm=None, sinr_raw=None, sinr_db=None, srxlev=None)
    raise ParseError("+QENG", line, f"unsupported <rat> {rat!r}")


# --- +QLTS ------------------------------------------------------------------------------


def parse_qlts(text: str, *, mode: int = 0) -> NetworkTime | None:
    """`+QLTS: "yyyy/MM/dd,hh:mm:ss±zz,d"` -> aware time in the network's zone, DST hours.

    The wall time is UTC for `AT+QLTS` / `AT+QLTS=0` (latest synchronised time) and
    `AT+QLTS=1` (current GMT), local for `AT+QLTS=2`; pass the mode the command used.
    `+QLTS: ""` (no network time received yet) is None."""
    if mode not in (0, 1, 2):
        raise ValueError(f"AT+QLTS mode is 0, 1 or 2, not {mode}")
    line = single_line(text, "+QLTS")
    value, rest = quoted_value(payload(line, "+QLTS"), "+QLTS", line)
    if rest:
        raise ParseError("+QLTS", line, "unexpected text after the time")
    if not value:
        return None
    return parse_time_value(value, "+QLTS", line, utc=mode != 2)


# --- +QCFG="usbnet", +QNETDEVCTL ------------------------------------------------------


class QuectelUsbNet(IntEnum):
    """`AT+QCFG="usbnet"`: the USB network interface the module exposes."""

    RMNET = 0   # QMI / RmNet (qmi_wwan)
    ECM = 1
    MBIM = 2
    RNDIS = 3
    NCM = 5     # newer platforms (RM5xx)


def parse_qcfg_usbnet(text: str) -> QuectelUsbNet:
    """`+QCFG: "usbnet",<net>`."""
    line, fields = line_fields(text, "+QCFG")
    if fields[0].text.lower() != "usbnet" or len(fields) != 2:
        raise ParseError("+QCFG", line, 'expected "usbnet",<net>')
    value = to_int(fields[1].text, "+QCFG", line, "<net>")
    try:
        return QuectelUsbNet(value)
    except ValueError:
        raise ParseError("+QCFG", line, f"unknown usbnet mode {value}") from None


class NetdevConnectType(IntEnum):
    """`<op>` of +QNETDEVCTL (names as in ModemManager's MMQNetdevCtlConnectType)."""

    DISCONNECTED = 0
    CONNECT_ONCE = 1
    RESERVED = 2
    CONNECT_AUTO = 3


@dataclass(frozen=True, slots=True)
class QuectelNetdevStatus:
    """One `+QNETDEVCTL: <op>,<cid>,<urc_en>,<state>` line (`AT+QNETDEVCTL?`)."""

    connect_type: NetdevConnectType
    cid: int
    urc_enabled: bool
    connected: bool


def parse_qnetdevctl(text: str) -> tuple[QuectelNetdevStatus, ...]:
    """`+QNETDEVCTL: 3,1,0,1` lines (one per configured context). The three-field layouts of
    some Unisoc-based modules are not supported."""
    result: list[QuectelNetdevStatus] = []
    lines = response_lines(text)
    if not lines:
        raise ParseError("+QNETDEVCTL", text, "empty response")
    for line in lines:
        fields = split_fields(payload(line, "+QNETDEVCTL"), "+QNETDEVCTL", line)
        if len(fields) != 4:
            raise ParseError("+QNETDEVCTL", line, "expected <op>,<cid>,<urc_en>,<state>")
        op, cid, urc, state = (to_int(f.text, "+QNETDEVCTL", line, "value") for f in fields)
        if op not in tuple(NetdevConnectType) or not 0 <= cid <= 15 or urc not in (0, 1) \
                or state not in (0, 1):
            raise ParseError("+QNETDEVCTL", line, "value out of range")
        result.append(QuectelNetdevStatus(connect_type=NetdevConnectType(op), cid=cid,
                                          urc_enabled=urc == 1, connected=state == 1))
    return tuple(result)


# --- SIM: +QDSIM, +QSIMSTAT, +QCCID ---------------------------------------------------


def parse_qdsim(text: str) -> int:
    """`+QDSIM: 0|1`: the selected SIM slot (0 = SIM1, 1 = SIM2)."""
    line = single_line(text, "+QDSIM")
    slot = to_int(payload(line, "+QDSIM"), "+QDSIM", line, "<mode>")
    if slot not in (0, 1):
        raise ParseError("+QDSIM", line, f"slot {slot} is not 0 or 1")
    return slot


@dataclass(frozen=True, slots=True)
class QuectelSimStatus:
    """`+QSIMSTAT: <enable>,<inserted_status>`; `inserted` is None for status 2 (unknown,
    before the SIM is initialised)."""

    report_enabled: bool
    inserted: bool | None


def parse_qsimstat(text: str) -> QuectelSimStatus:
    """`AT+QSIMSTAT?` read response (the URC has the same shape)."""
    line, (enable, status) = int_fields(text, "+QSIMSTAT", "<enable>", "<inserted_status>")
    if enable not in (0, 1) or status not in (0, 1, 2):
        raise ParseError("+QSIMSTAT", line, "value out of range")
    return QuectelSimStatus(report_enabled=enable == 1,
                            inserted=None if status == 2 else status == 1)


def parse_qccid(text: str) -> str:
    """`+QCCID: 8982...` -> the ICCID (trailing F padding removed)."""
    return parse_iccid(text, prefix="+QCCID")


@dataclass(frozen=True, slots=True)
class QuectelIpUrc:
    """`+QIURC: "<kind>"[,<args>]` (TCP/IP stack URCs); `kind` lower case, e.g.
    `pdpdeact` (the network deactivated context `context_id`)."""

    kind: str
    context_id: int | None


def parse_qiurc(text: str) -> QuectelIpUrc:
    """`+QIURC: "pdpdeact",<contextID>` and the other `+QIURC` kinds (`recv`, `closed`,
    `incoming full`...: `context_id` None)."""
    line, fields = line_fields(text, "+QIURC")
    kind = fields[0].text.strip().lower()
    if not kind:
        raise ParseError("+QIURC", line, "no URC kind")
    context: int | None = None
    if kind == "pdpdeact":
        if len(fields) != 2:
            raise ParseError("+QIURC", line, 'expected "pdpdeact",<contextID>')
        context = to_int(fields[1].text, "+QIURC", line, "<contextID>")
    return QuectelIpUrc(kind=kind, context_id=context)


def parse_qusim(text: str) -> int:
    """`+QUSIM: <n>`: the (U)SIM was (re)initialised (1: a USIM, 0: a SIM). ModemManager
    (`mm-shared-quectel.c`) takes `+QUSIM: 1` as the trigger of a SIM swap check."""
    line = single_line(text, "+QUSIM")
    value = to_int(payload(line, "+QUSIM"), "+QUSIM", line, "<n>")
    if value not in (0, 1):
        raise ParseError("+QUSIM", line, f"<n> {value} is not 0 or 1")
    return value
